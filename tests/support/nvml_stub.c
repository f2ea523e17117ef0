/* A stand-in libnvidia-ml.so.1 for tests without a GPU: the NVML entry points the agent uses,
 * with the real signatures and struct layouts, serving devices, processes and utilization
 * scripted in the file named by NVML_STUB_CONFIG (read at nvmlInit):
 *
 *   device <uuid> <name> <total_mib> <used_mib> <util_percent> <power_mw> <energy_step_mj>
 *   mig <device index> <uuid> <total_mib> <used_mib>
 *   process <device index> <pid> <used_mib> <sm_util_percent>
 *   lost <device index> <after this many utilization reads>
 *
 * Build: gcc -shared -fPIC -o libnvidia-ml.so.1 nvml_stub.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;
typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil, memUtil, encUtil, decUtil;
} nvmlProcessUtilizationSample_t;

#define MAX 16
struct device {
    char uuid[96], name[96];
    unsigned long long total, used;
    unsigned int util, power_mw;
    unsigned long long energy_mj, energy_step;
    int parent;   /* -1: a GPU; else the index of the GPU this MIG device is part of */
    int lost_after, reads;
};
struct process { int device; unsigned int pid, sm; unsigned long long used; };

static struct device devices[MAX * 2];
static int n_devices, n_gpus;
static struct process processes[MAX * 4];
static int n_processes;
static int initialized;

static struct device *gpu(int index) {
    int seen = 0;
    for (int i = 0; i < n_devices; i++)
        if (devices[i].parent < 0 && seen++ == index) return &devices[i];
    return NULL;
}

static int lost(struct device *d) {
    struct device *g = d->parent < 0 ? d : gpu(d->parent);
    return g->lost_after >= 0 && g->reads > g->lost_after;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    const char *path = getenv("NVML_STUB_CONFIG");
    FILE *f = path ? fopen(path, "r") : NULL;
    n_devices = n_gpus = n_processes = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        struct device *d = &devices[n_devices];
        unsigned long long total, used, step;
        unsigned int util, power, pid, sm;
        int index, after;
        char uuid[96], name[96];
        if (sscanf(line, "device %95s %95s %llu %llu %u %u %llu", uuid, name, &total, &used,
                   &util, &power, &step) == 7 && n_devices < MAX * 2) {
            memset(d, 0, sizeof *d);
            strcpy(d->uuid, uuid);
            strcpy(d->name, name);
            for (char *c = d->name; *c; c++) if (*c == '_') *c = ' ';
            d->total = total << 20; d->used = used << 20; d->util = util; d->power_mw = power;
            d->energy_mj = 1000000; d->energy_step = step; d->parent = -1; d->lost_after = -1;
            n_devices++; n_gpus++;
        } else if (sscanf(line, "mig %d %95s %llu %llu", &index, uuid, &total, &used) == 4
                   && n_devices < MAX * 2) {
            memset(d, 0, sizeof *d);
            strcpy(d->uuid, uuid);
            strcpy(d->name, "MIG");
            d->total = total << 20; d->used = used << 20; d->parent = index; d->lost_after = -1;
            n_devices++;
        } else if (sscanf(line, "process %d %u %llu %u", &index, &pid, &used, &sm) == 4
                   && n_processes < MAX * 4) {
            processes[n_processes++] = (struct process){index, pid, sm, used << 20};
        } else if (sscanf(line, "lost %d %d", &index, &after) == 2 && gpu(index)) {
            gpu(index)->lost_after = after;
        }
    }
    if (f) fclose(f);
    initialized = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { initialized = 0; return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    *count = n_gpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, struct device **handle) {
    struct device *d = gpu(index);
    if (!d) return NVML_ERROR_INVALID_ARGUMENT;
    *handle = d;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(struct device *d, unsigned int *index) {
    *index = 0;
    for (int i = 0; i < n_devices && &devices[i] != d; i++)
        if (devices[i].parent < 0) (*index)++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(struct device *d, char *uuid, unsigned int length) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    snprintf(uuid, length, "%s", d->uuid);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(struct device *d, char *name, unsigned int length) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    snprintf(name, length, "%s", d->name);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(struct device *d, nvmlMemory_t *memory) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    memory->total = d->total;
    memory->used = d->used;
    memory->free = d->total - d->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(struct device *d, nvmlUtilization_t *utilization) {
    if (d->parent >= 0) return NVML_ERROR_NOT_SUPPORTED; /* as on MIG devices */
    d->reads++;
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    utilization->gpu = d->util;
    utilization->memory = d->util / 2;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(struct device *d, unsigned int *milliwatts) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    if (d->parent >= 0) return NVML_ERROR_NOT_SUPPORTED;
    *milliwatts = d->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(struct device *d, unsigned long long *mj) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    if (d->parent >= 0 || !d->energy_step) return NVML_ERROR_NOT_SUPPORTED;
    d->energy_mj += d->energy_step;
    *mj = d->energy_mj;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(struct device *d, unsigned int *current, unsigned int *pending) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    int migs = 0;
    for (int i = 0; i < n_devices; i++) if (devices[i].parent >= 0 && gpu(devices[i].parent) == d) migs++;
    if (!migs) return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(struct device *d, unsigned int *count) {
    (void)d;
    *count = 7;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(struct device *d, unsigned int index,
                                                 struct device **mig) {
    unsigned int seen = 0;
    for (int i = 0; i < n_devices; i++) {
        if (devices[i].parent >= 0 && gpu(devices[i].parent) == d && seen++ == index) {
            *mig = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

static int processes_of(struct device *d, nvmlProcessInfo_t *infos, unsigned int room) {
    int count = 0;
    for (int i = 0; i < n_processes; i++) {
        if (gpu(processes[i].device) != d) continue;
        if (infos && (unsigned int)count < room)
            infos[count] = (nvmlProcessInfo_t){processes[i].pid, processes[i].used, 0, 0};
        count++;
    }
    return count;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(struct device *d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    unsigned int found = processes_of(d, NULL, 0);
    if (!infos || *count < found) {
        *count = found;
        return found ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    *count = processes_of(d, infos, *count);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(struct device *d,
                                             nvmlProcessUtilizationSample_t *samples,
                                             unsigned int *count, unsigned long long since) {
    (void)since;
    if (lost(d)) return NVML_ERROR_GPU_IS_LOST;
    unsigned int found = 0;
    for (int i = 0; i < n_processes; i++) if (gpu(processes[i].device) == d) found++;
    if (!found) return NVML_ERROR_NOT_FOUND;
    if (!samples || *count < found) {
        *count = found;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (int i = 0; i < n_processes; i++) {
        if (gpu(processes[i].device) != d) continue;
        samples[k++] = (nvmlProcessUtilizationSample_t){processes[i].pid, since + 1,
                                                       processes[i].sm, 0, 0, 0};
    }
    *count = k;
    return NVML_SUCCESS;
}
