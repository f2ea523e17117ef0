"""When things happen in the sample loop: the tick schedule, and when the workload's absence
ends the run."""

from __future__ import annotations

import structlog

from sentinel_sidecar.config import Settings

log = structlog.get_logger(__name__)


class WorkloadWatch:
    """When the workload's absence ends the run: gone after having been seen (a classic
    sidecar must not keep a Job's pod alive), or never seen within workload_wait."""

    def __init__(self, settings: Settings, started: float) -> None:
        self._settings = settings
        self._started = started
        self._seen = self._warned = False

    def ended(self, process_count: int, now: float) -> bool:
        """Take one reading's count of workload processes; True when the run should end."""
        settings = self._settings
        if process_count > 0:
            self._seen = True
            return False
        if self._seen:
            if settings.exit_with_workload:
                log.info("workload_exited")
            return settings.exit_with_workload
        if settings.pid is not None:
            # A process that is gone never comes back: no reason to wait for it.
            self._seen = True
            log.warning(
                "workload_ended_before_first_sample",
                pid=settings.pid,
                hint="`sentinel-sidecar run -- CMD` tracks a command from its start",
            )
            return settings.exit_with_workload
        if self._warned or now - self._started < settings.workload_wait:
            return False
        self._warned = True
        log.warning("no_workload_processes", waited_s=settings.workload_wait,
                    hint=_absent_hint(settings),
                    ending=settings.exit_with_workload)  # fmt: skip
        return settings.exit_with_workload


def _absent_hint(settings: Settings) -> str:
    if settings.cgroup is not None:
        return f"no process in cgroup {settings.cgroup}"
    if settings.pod.in_pod:
        return ("shareProcessNamespace: true is probably missing from the pod spec, or the "
                "workload ended before the first sample")  # fmt: skip
    return ("no other process is visible (compose: pid: service:<holder>); outside a pod use "
            "--pid PID or sentinel-sidecar run -- CMD")  # fmt: skip


class Ticker:
    """Tick times on a monotonic clock at start + k * interval; a late tick skips, never drifts."""

    def __init__(self, interval: float, start: float) -> None:
        self.interval = interval
        self._next = start + interval

    def next_after(self, now: float) -> float:
        """The next tick time strictly after `now`, advancing the schedule."""
        if now >= self._next:
            missed = int((now - self._next) // self.interval) + 1
            self._next += missed * self.interval
        due = self._next
        self._next += self.interval
        return due
