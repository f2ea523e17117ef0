"""CPU accounting over a changing set of processes, tick by tick, in the kernel's terms: a reaped
child's CPU moves into its reaper's cutime/cstime."""

from __future__ import annotations

import pytest

from sentinel_sidecar.measure.accounting import ProcAccounting
from sentinel_sidecar.measure.process import ProcessInfo


def proc(
    pid: int,
    ppid: int,
    user: float = 0.0,
    children: float = 0.0,
    *,
    started: float = 1.0,
    name: str = "x",
    zombie: bool = False,
) -> ProcessInfo:
    return ProcessInfo(
        pid, ppid, name, started, cpu_user_s=user, children_user_s=children, zombie=zombie
    )


PAUSE = 1


class Pod:
    """Feeds ticks to a ProcAccounting the way the collector does; returns the total CPU."""

    def __init__(self) -> None:
        self.accounting = ProcAccounting()
        self.uptime = 10.0

    def tick(
        self,
        *processes: ProcessInfo,
        pause_reaped: float = 0.0,
        others: tuple[ProcessInfo, ...] = (),
        io: dict[int, tuple[int | None, int | None]] | None = None,
    ) -> float:
        pause = proc(PAUSE, 0, children=pause_reaped, name="pause")
        listing = [pause, *processes, *others]
        by_pid = {process.pid: process.key for process in processes}
        counters = self.accounting.update(
            list(processes),
            {by_pid[pid]: value for pid, value in (io or {}).items()},
            alive={process.key for process in listing},
            pause=pause,
            uptime=self.uptime,
        )
        self.uptime += 1.0
        self.last = counters
        return counters.cpu_user_s


def test_children_living_less_than_one_interval_are_counted_through_their_parent():
    pod = Pod()
    assert pod.tick(proc(10, 0, user=1.0)) == 0.0  # the first tick is the baseline
    # 40 children of 25 ms each came and went within the interval; the parent waited for them.
    assert pod.tick(proc(10, 0, user=1.1, children=1.0)) == pytest.approx(1.1)


def test_a_child_seen_before_it_exits_is_counted_once():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0), proc(11, 10, user=5.0, started=5.0))
    # The child ran 1 s more, exited, and its parent reaped it (cutime += 6).
    assert pod.tick(proc(10, 0, user=1.0, children=6.0)) == pytest.approx(1.0)


def test_an_orphan_reaped_by_pause_is_counted_once():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0), proc(12, PAUSE, user=2.0, started=5.0))
    assert pod.tick(proc(10, 0, user=1.0), pause_reaped=2.5) == pytest.approx(0.5)
    # Born after the last tick and reaped by pause before this one: all of it counts.
    assert pod.tick(proc(10, 0, user=1.0), pause_reaped=3.25) == pytest.approx(1.25)


def test_pause_own_cpu_is_not_the_workloads():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0))
    pause = proc(PAUSE, 0, user=50.0, name="pause")
    assert pod.tick(proc(10, 0, user=1.0), others=(pause,)) == 0.0


def test_a_container_init_that_exits_loses_only_its_own_last_interval():
    pod = Pod()
    pod.tick(proc(10, 0, user=30.0), proc(20, 0, user=1.0))
    # Container 10's init exited and was reaped outside; container 20 used 2 s meanwhile.
    assert pod.tick(proc(20, 0, user=3.0)) == pytest.approx(2.0)


def test_an_init_that_reaped_its_child_and_exited_does_not_eat_other_containers_cpu():
    pod = Pod()
    pod.tick(proc(10, 0, user=3.0), proc(11, 10, user=8.0, started=5.0), proc(20, 0, user=1.0))
    # 10 reaped 11 and exited: both are gone, 11's CPU went out with 10. pause reaped nothing.
    assert pod.tick(proc(20, 0, user=3.0)) == pytest.approx(2.0)


def test_an_init_that_died_first_leaves_its_children_to_pause_and_they_count_once():
    pod = Pod()
    pod.tick(proc(10, 0, user=3.0), proc(11, 10, user=8.0, started=5.0), proc(20, 0, user=1.0))
    # 10 exited, 11 was orphaned, ran 1 s more and was reaped by pause (cutime += 9).
    assert pod.tick(proc(20, 0, user=3.0), pause_reaped=9.0) == pytest.approx(2.0 + 1.0)


def test_a_reused_pid_is_a_new_process():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0), proc(11, 10, user=4.0, started=5.0))
    # 11 exited (reaped by 10: +4.5) and a new process got pid 11 after the tick.
    total = pod.tick(proc(10, 0, user=1.0, children=4.5), proc(11, 10, user=0.2, started=10.5))
    assert total == pytest.approx(0.5 + 0.2)


def test_an_old_process_coming_into_sight_counts_from_now_not_from_its_start():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0))
    # Out of sight until now (e.g. measured through its cgroup last tick), 500 s of CPU behind it.
    assert pod.tick(proc(10, 0, user=1.0), proc(30, 0, user=500.0, started=2.0)) == 0.0
    assert pod.tick(proc(10, 0, user=1.0), proc(30, 0, user=501.0, started=2.0)) == 1.0


def test_a_process_that_leaves_the_set_alive_is_not_subtracted():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0), proc(11, 10, user=5.0, started=5.0))
    # 11 is still alive but measured another way now (its own cgroup): nothing moved to 10.
    assert pod.tick(proc(10, 0, user=2.0), others=(proc(11, 10, user=6.0, started=5.0),)) == 1.0


def test_a_child_reaped_between_the_reads_dips_and_the_total_stays_exact():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0), proc(11, 10, user=5.0, started=5.0))
    # The parent's stat was read before it reaped 11, 11's stat after it was gone.
    assert pod.tick(proc(10, 0, user=1.5)) == 0.0  # never goes back
    # The parent's cutime now holds 11's 5.5 s: the total catches up exactly.
    assert pod.tick(proc(10, 0, user=2.0, children=5.5)) == pytest.approx(1.0 + 0.5)


def test_a_zombie_counts_its_final_cpu_once():
    pod = Pod()
    pod.tick(proc(10, 0, user=1.0), proc(11, 10, user=2.0, started=5.0))
    assert pod.tick(proc(10, 0, user=1.0), proc(11, 10, 3.0, started=5.0, zombie=True)) == 1.0
    assert pod.tick(proc(10, 0, user=1.0, children=3.0)) == 1.0


def test_io_follows_the_reaper_and_is_unknown_when_a_process_hides_it():
    pod = Pod()
    pod.tick(proc(10, 0), proc(11, 10, started=5.0), io={10: (0, 0), 11: (100, 10)})
    # 11 read 50 bytes more, exited, and 10 reaped it: 10's io now holds 11's 150 / 10.
    pod.tick(proc(10, 0, children=0.1), io={10: (150, 10)})
    assert (pod.last.read_bytes, pod.last.write_bytes) == (50, 0)
    pod.tick(proc(10, 0, children=0.1), io={10: (None, None)})  # io denied this time
    assert pod.last.read_bytes is None and pod.last.write_bytes is None
