"""The watchdog's judgement, one check at a time (the real worker is in tests/integration)."""

from __future__ import annotations

from tasks.watchdog import STALL, StallWatch


def test_stuck_only_after_the_stall_window_of_waiting_work_and_an_idle_pool() -> None:
    watch = StallWatch(now=0.0)
    assert watch.check(1.0, queued=1, idle=True) is None
    seen = watch.check(1.0 + STALL, queued=1, idle=True)
    assert seen is not None and (seen.queued, seen.idle) == (1, True)
    assert seen.since_taken == 1.0 + STALL


def test_a_fresh_worker_has_the_whole_window() -> None:
    watch = StallWatch(now=100.0)
    assert watch.check(100.0, queued=1, idle=True) is None
    assert watch.check(100.0 + STALL - 1, queued=1, idle=True) is None


def test_a_task_received_restarts_the_clock() -> None:
    watch = StallWatch(now=0.0)
    watch.check(0.0, queued=1, idle=True)
    watch.taken(STALL - 1)
    assert watch.check(STALL + 1, queued=1, idle=True) is None
    assert watch.check(2 * STALL, queued=1, idle=True) is not None


def test_no_waiting_work_or_a_busy_pool_is_never_stuck() -> None:
    for queued, idle in ((0, True), (2, False)):
        watch = StallWatch(now=0.0)
        for t in range(0, int(3 * STALL), 5):
            assert watch.check(float(t), queued=queued, idle=idle) is None


def test_the_window_starts_again_when_the_work_stops_waiting() -> None:
    watch = StallWatch(now=0.0)
    watch.check(10.0, queued=1, idle=True)
    watch.check(20.0, queued=1, idle=False)  # the pool took something
    assert watch.check(20.0 + STALL - 1, queued=1, idle=True) is None
