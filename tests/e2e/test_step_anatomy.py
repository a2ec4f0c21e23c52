"""The step anatomy of one real built-in run: 2 gloo ranks, a slow DataLoader, rank 1 slowed on purpose.

One run checks the three claims at once (a DDP start costs seconds): the phases add up to the wall
time, the slowed rank is named the worst with its skew although DDP keeps the ranks in lockstep,
and the slow input is named input-bound by the [health] rule over the run's own events.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_worker import checked, profile
from tests.support import engine
from training.monitor.health import HealthMonitor
from training.profile import parse_profile
from training.rundir.records import TimingEvent, parse_events
from training.rundir.step_anatomy import TimingFold

pytestmark = pytest.mark.slow

# The whole run's phases against its wall time (the running status to the last timing event, both
# stamped by rank 0): the events' times are rounded to 1 ms and the first step starts just after
# the status is written.
WALL_TOLERANCE = 0.10
WALL_SLACK_S = 0.15


def test_phases_add_up_the_slowed_rank_is_worst_and_slow_input_is_input_bound(tmp_path):
    paths = engine.make_run(tmp_path / "runs", profile("ddp", epochs=2, steps=8, log_every=4))
    # 16 samples x 1.5 ms to load each step on both ranks; rank 1 also sleeps 25 ms after each step.
    checked(engine.run(paths, nproc=2, ENGINE_TEST_SLOW_SAMPLE_S="0.0015", TRAINDECK_TEST_STEP_DELAY_S="0.025",
                       TRAINDECK_TEST_STEP_DELAY_RANK="1"))
    raw = engine.events(paths)
    events = parse_events(raw)
    timings = [e for e in events if isinstance(e, TimingEvent)]
    assert {e.rank for e in timings} == {0, 1}
    for e in timings:  # each interval's phases are its wall time
        assert sum(e.phases.values()) == pytest.approx(e.seconds, abs=1e-5)
    mine = [e for e in timings if e.rank == 0]
    assert sum(e.steps for e in mine) == 16 and mine[-1].total_steps == 16
    assert {"data", "compute", "comm", "optimizer", "eval", "checkpoint", "other"} <= set(mine[-1].total_phases)
    running = next(e for e in raw if e["kind"] == "status" and e["state"] == "running")
    wall = mine[-1].t - running["t"]
    assert mine[-1].total_seconds == pytest.approx(wall, rel=WALL_TOLERANCE, abs=WALL_SLACK_S)

    # The FLOPs of a sample, counted once: the MLP's two matmuls forward and backward (6 x weights).
    assert running["flops_per_sample"] == pytest.approx(6 * (32 * 16 + 16 * 4), rel=0.5)

    fold = TimingFold()
    for e in timings:
        fold.add(e)
    whole = fold.whole_run()
    assert whole.slowest_rank == 1
    # Rank 1's busy time holds its 25 ms sleep a step, rank 0's does not: it waits in the all-reduce.
    # (With two ranks the median is their mean: the skew is half the gap over it.)
    r0, r1 = whole.ranks
    assert 0.015 < r1.busy_s - r0.busy_s < 0.05, whole
    assert whole.skew_pct == pytest.approx((r1.busy_s - (r0.busy_s + r1.busy_s) / 2) / ((r0.busy_s + r1.busy_s) / 2) * 100)
    assert whole.skew_pct > 5
    assert whole.phases["comm"].worst_rank == 0 and whole.phases["other"].worst_rank == 1

    # The [health] rule over this run's events: the median rank waits for input most of each step.
    assert fold.recent().share("data") > 0.3
    health = parse_profile('[train]\ntask = "tiny"\n[health]\ninput_bound_for_s = 0\n')
    fired = HealthMonitor(paths, health, emit=lambda evs: None, from_start=True).observe(raw)
    input_bound = [e for e in fired if e["rule"] == "input_bound"]
    assert len(input_bound) == 1 and "num_workers (now 0)" in input_bound[0]["message"], json.dumps(fired)
