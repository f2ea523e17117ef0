"""Measuring: the kernel's figures (/proc, cgroupfs, NVML) read once per tick, turned into the
workload's counters and one CSV row per interval. Imports nothing of delivery or identity."""
