{{/*
Named templates to add the agent to any pod. From a parent chart that lists this chart as a
dependency, call them with this chart's values and the parent's root context:

  {{- $sidecar := dict "Values" (index .Values "sentinel-sidecar") "Root" $ }}
  spec:
    {{- include "sentinel-sidecar.podSpecPatch" $sidecar | nindent 4 }}
    initContainers:            # sidecarMode: native (containers: for classic)
      - {{- include "sentinel-sidecar.container" $sidecar | nindent 8 }}
    volumes:
      {{- include "sentinel-sidecar.volumes" $sidecar | nindent 6 }}
*/}}

{{/* This chart's own appVersion, whichever chart renders the include. Read as a field:
Helm 3 and Helm 4 spell the keys of `.Chart` differently once it is turned into YAML. */}}
{{- define "sentinel-sidecar.appVersion" -}}
{{- if .Root -}}
{{- (index .Root.Subcharts "sentinel-sidecar").Chart.AppVersion -}}
{{- else -}}
{{- .Chart.AppVersion -}}
{{- end -}}
{{- end }}

{{/* The release: this chart's own, or the parent's when included from there. */}}
{{- define "sentinel-sidecar.release" -}}
{{- if .Root }}{{ .Root.Release.Name }}{{ else }}{{ .Release.Name }}{{ end -}}
{{- end }}

{{/* <release>-sentinel-sidecar, at most 63 characters (a release named after the chart
is not repeated). */}}
{{- define "sentinel-sidecar.fullname" -}}
{{- $release := include "sentinel-sidecar.release" . -}}
{{- if contains "sentinel-sidecar" $release -}}
{{- $release | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-sentinel-sidecar" $release | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "sentinel-sidecar.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "sentinel-sidecar.fullname" .) -}}
{{- end }}

{{- define "sentinel-sidecar.image" -}}
{{- $tag := .Values.image.tag | default (include "sentinel-sidecar.appVersion" .) -}}
{{ printf "%s:%s" .Values.image.repository $tag | quote }}
{{- end }}

{{- define "sentinel-sidecar.gracePeriod" -}}
{{ add (int (ceil .Values.agent.shutdownTimeout)) 10 }}
{{- end }}

{{/* Pod-level fields the agent needs: shared pid namespace, grace period, and the service
account this chart creates (none when serviceAccount.create is false: the pod keeps its own). */}}
{{- define "sentinel-sidecar.podSpecPatch" -}}
shareProcessNamespace: true
terminationGracePeriodSeconds: {{ include "sentinel-sidecar.gracePeriod" . }}
{{- if .Values.serviceAccount.create }}
serviceAccountName: {{ include "sentinel-sidecar.serviceAccountName" . }}
{{- end }}
{{- end }}

{{/* The spool volume's sizeLimit: the cap, two segments (a merge in progress) and 16Mi. */}}
{{- define "sentinel-sidecar.spoolSizeLimit" -}}
{{- $spool := .Values.spool -}}
{{- if lt (int $spool.maxMiB) (mul 8 (int $spool.segmentMiB)) -}}
{{- fail (printf "spool.maxMiB (%d) must hold at least 8 segments of spool.segmentMiB (%d)" (int $spool.maxMiB) (int $spool.segmentMiB)) -}}
{{- end -}}
{{ add (int $spool.maxMiB) (mul 2 (int $spool.segmentMiB)) 16 }}Mi
{{- end }}

{{/* The spool (emptyDir, survives agent restarts in the pod) and a small /tmp. */}}
{{- define "sentinel-sidecar.volumes" -}}
- name: sentinel-spool
  emptyDir:
    sizeLimit: {{ include "sentinel-sidecar.spoolSizeLimit" . }}
- name: sentinel-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- if and .Values.token.secretName (eq .Values.token.as "file") }}
- name: sentinel-token
  secret:
    secretName: {{ .Values.token.secretName }}
    items:
      - key: {{ .Values.token.secretKey }}
        path: token
{{- end }}
{{- end }}

{{/* Mount of the spool volume, for the workload container (exit-code file). */}}
{{- define "sentinel-sidecar.spoolMount" -}}
- name: sentinel-spool
  mountPath: /var/lib/sentinel-sidecar
{{- end }}

{{- define "sentinel-sidecar.env" -}}
{{- $agent := .Values.agent -}}
{{- if .Values.token.secretName }}
{{- if eq .Values.token.as "file" }}
- name: SENTINEL_API_TOKEN_FILE
  value: /var/run/secrets/sentinel/token
{{- else }}
- name: SENTINEL_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.token.secretName }}
      key: {{ .Values.token.secretKey }}
{{- end }}
- name: SENTINEL_API_URL
  value: {{ .Values.sentinel.apiUrl | quote }}
{{- end }}
{{- with .Values.s3.uri }}
- name: TRACKER_S3_URI
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.endpointUrl }}
- name: S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
- name: TRACKER_INTERVAL
  value: {{ $agent.interval | quote }}
- name: TRACKER_UPLOAD_INTERVAL
  value: {{ $agent.uploadInterval | quote }}
- name: TRACKER_UPLOAD_THRESHOLD_BYTES
  value: {{ $agent.uploadThresholdBytes | int64 | quote }}
- name: TRACKER_MAX_CHUNK_BYTES
  value: {{ $agent.maxChunkBytes | int64 | quote }}
- name: TRACKER_INLINE_MAX_BYTES
  value: {{ $agent.inlineMaxBytes | int64 | quote }}
- name: TRACKER_SHUTDOWN_TIMEOUT
  value: {{ $agent.shutdownTimeout | quote }}
- name: TRACKER_WORKLOAD_WAIT
  value: {{ $agent.workloadWait | quote }}
- name: TRACKER_SCHEMA
  value: {{ $agent.schema | quote }}
- name: TRACKER_SPOOL_MAX_BYTES
  value: {{ mul (int .Values.spool.maxMiB) 1048576 | quote }}
- name: TRACKER_SPOOL_SEGMENT_BYTES
  value: {{ mul (int .Values.spool.segmentMiB) 1048576 | quote }}
- name: TRACKER_LOG_LEVEL
  value: {{ $agent.logLevel | quote }}
- name: TRACKER_LOG_FORMAT
  value: {{ $agent.logFormat | quote }}
- name: TRACKER_HEALTH_PORT
  value: {{ $agent.healthPort | quote }}
- name: TRACKER_EXIT_WITH_WORKLOAD
  value: {{ eq .Values.sidecarMode "classic" | quote }}
- name: TRACKER_K8S_EXIT_CODE
  value: {{ $agent.k8sExitCode | quote }}
- name: TRACKER_K8S_CONTAINER_NAME
  value: {{ .Values.containerName | quote }}
- name: TRACKER_CLOUD_DETECT
  value: {{ $agent.cloudDetect | quote }}
- name: TRACKER_SEND_HOST_IDENTITY
  value: {{ $agent.sendHostIdentity | quote }}
{{- with $agent.workloadContainer }}
- name: TRACKER_K8S_WORKLOAD_CONTAINER
  value: {{ . | quote }}
{{- end }}
{{- range $key, $value := .Values.metadata }}
{{- if $value }}
- name: TRACKER_{{ $key | snakecase | upper }}
  value: {{ if kindIs "map" $value }}{{ $value | toJson | quote }}{{ else }}{{ $value | quote }}{{ end }}
{{- end }}
{{- end }}
{{- if .Values.gpu.visibleToSidecar }}
- name: NVIDIA_VISIBLE_DEVICES
  value: all
- name: NVIDIA_DRIVER_CAPABILITIES
  value: utility
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The agent's container; for sidecarMode native it goes into initContainers. */}}
{{- define "sentinel-sidecar.container" -}}
name: {{ .Values.containerName }}
image: {{ include "sentinel-sidecar.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- if eq .Values.sidecarMode "native" }}
restartPolicy: Always
{{- end }}
args: ["run"]
env:
  {{- include "sentinel-sidecar.env" . | nindent 2 }}
{{- if .Values.agent.healthPort }}
ports:
  - name: sentinel-health
    containerPort: {{ .Values.agent.healthPort }}
startupProbe:
  httpGet:
    path: /healthz
    port: sentinel-health
  periodSeconds: 1
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: sentinel-health
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: sentinel-health
  periodSeconds: 10
{{- end }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: sentinel-spool
    mountPath: /var/lib/sentinel-sidecar
  - name: sentinel-tmp
    mountPath: /tmp
{{- if and .Values.token.secretName (eq .Values.token.as "file") }}
  - name: sentinel-token
    mountPath: /var/run/secrets/sentinel
    readOnly: true
{{- end }}
{{- end }}

{{/* Annotations for a Prometheus that scrapes pods by `prometheus.io/*` annotations; include
     them in your pod template's metadata.annotations. Empty when metrics.scrapeAnnotations is
     false or the health server is off. */}}
{{- define "sentinel-sidecar.podAnnotations" -}}
{{- if and .Values.metrics.scrapeAnnotations .Values.agent.healthPort }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.agent.healthPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* A command list as one shell-quoted string. */}}
{{- define "sentinel-sidecar.shellJoin" -}}
{{- $parts := list -}}
{{- range . -}}
{{- $parts = append $parts (printf "'%s'" (replace "'" "'\\''" .)) -}}
{{- end -}}
{{ join " " $parts }}
{{- end }}
