"""Training health end to end: a built-in task goes NaN, the supervisor's health rule save-stops
it, and the last checkpoint is the last good one."""

from __future__ import annotations

import math

import pytest
import torch

from tests.support.live_runs import events, stop_quietly, wait_done
from tests.support.profiles import builtin_profile
from training.console import runs
from training.engine.checkpoint import load_checkpoint
from training.rundir import RunState, read_json
from tui.headless.lines import HEALTH_EXIT, exit_code

pytestmark = pytest.mark.slow

NAN_AT = 23


def test_a_nan_run_is_save_stopped_with_a_good_last_checkpoint(runs_dir):
    profile = builtin_profile("single", epochs=1, steps=400, log_every=5, extra=f"""
[checkpoint]
every_steps = 10
[launch.env]
TRAINDECK_TEST_NAN_AT_STEP = "{NAN_AT}"
TRAINDECK_TEST_STEP_DELAY_S = "0.03"
""")
    paths = runs.start_run(profile, runs_dir)
    try:
        summary = wait_done(paths, timeout=40)
    finally:
        stop_quietly(paths)
    assert summary.state is RunState.STOPPED, summary
    # The rule fired once, at the first logging step after the NaN, and asked the worker to save-stop.
    health = events(paths, "health")
    assert [(e["rule"], e["step"], e["action"]) for e in health] == [("nan", 25, "save-stop")], health
    train = [e for e in events(paths, "metric") if e.get("split") == "train"]
    assert all(math.isfinite(e["values"]["grad_norm"]) for e in train if e["step"] < NAN_AT)
    assert [e["values"]["grad_norm"] for e in train if e["step"] == 25] == ["nan"]
    # Saves after the NaN were refused; last.pt is step 20's, finite, and there is no best.pt.
    state = load_checkpoint(paths.checkpoints / "last.pt")
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (paths.checkpoints / "best.pt").exists()
    written = [e["step"] for e in events(paths, "checkpoint")]
    assert written == [10, 20], written
    refused = [e for e in events(paths, "log") if e.get("unhealthy")]
    assert refused and all(e["step"] > NAN_AT for e in refused)
    # exit.json and the headless exit code name the rule.
    exit_data = read_json(paths.exit_json)
    assert exit_data["health"]["rule"] == "nan" and "health rule 'nan'" in exit_data["message"]
    assert exit_code(exit_data, stopped_by_us=False) == HEALTH_EXIT
