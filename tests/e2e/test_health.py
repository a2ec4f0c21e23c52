"""Training health end to end: a built-in task goes NaN, the supervisor's health rule save-stops
it, and the last checkpoint is the last good one."""

from __future__ import annotations

import math

import pytest
import torch

from tests.support.live_runs import events, run_to_end
from tests.support.profiles import builtin_profile
from tests.support.waiting import wait_for
from training.engine.checkpoint import load_checkpoint
from training.rundir import RunState, read_json
from tui.headless.lines import HEALTH_EXIT, exit_code

pytestmark = pytest.mark.slow

NAN_AT = 23


def nan_run(runs_dir, mode: str, steps: int, delay_s: float, timeout: float, health: str = "", env: str = ""):
    """A built-in run that goes NaN at step NAN_AT, checkpointing every 10 steps, run to its end."""
    profile = builtin_profile(mode, epochs=1, steps=steps, log_every=5, extra=f"""
[checkpoint]
every_steps = 10
{health}
[launch.env]
TRAINDECK_TEST_NAN_AT_STEP = "{NAN_AT}"
TRAINDECK_TEST_STEP_DELAY_S = "{delay_s}"
{env}
""")
    return run_to_end(profile, runs_dir, timeout=timeout)


def test_a_nan_run_is_save_stopped_with_a_good_last_checkpoint(runs_dir):
    paths, summary = nan_run(runs_dir, "single", steps=400, delay_s=0.03, timeout=40)
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


def test_a_nan_run_rewinds_to_its_last_checkpoint_and_finishes_on_the_kept_branch(runs_dir):
    """nan = "rewind": the rule sends the worker back to last.pt (step 20) once; the run finishes,
    the step counter goes on from 20, and the plot's series hold only the kept branch."""
    from training.rundir.series import SeriesStore
    from tui.run_model import RunModel

    steps = 160
    paths, summary = nan_run(runs_dir, "single", steps=steps, delay_s=0.02, timeout=40,
                             health='[health]\nnan = "rewind"\nrewind_lr_factor = 0.5')
    assert summary.state is RunState.FINISHED, summary
    health = events(paths, "health")
    assert [(e["rule"], e["step"], e["action"], e["asked"]) for e in health] == [("nan", 25, "rewind", "rewind")]
    rewinds = [e for e in events(paths, "log") if e.get("control") == "rewind"]
    assert len(rewinds) == 1, rewinds
    rewind = rewinds[0]
    # last.pt was step 20's: every save after the NaN was refused.
    assert rewind["to_step"] == 20 and rewind["from_step"] > 25 and rewind["rewinds"] == 1
    all_events = events(paths)
    at = all_events.index(rewind)
    before, after = ([e for e in part if e["kind"] == "metric" and e.get("split") == "train"]
                     for part in (all_events[:at], all_events[at:]))
    # The abandoned stretch stays in events.jsonl (NaN losses up to from_step) ...
    assert [e["values"]["loss"] for e in before if e["step"] > NAN_AT] and \
        all(e["values"]["loss"] == "nan" for e in before if e["step"] > NAN_AT)
    # ... and after it the counter continues from the checkpoint's step, healthy, at half the lr.
    assert after[0]["step"] == 25, [e["step"] for e in after[:3]]
    steps_after = [e["step"] for e in after]
    assert steps_after == list(range(25, steps_after[-1] + 1, 5))
    assert all(math.isfinite(e["values"]["loss"]) for e in after)
    lr_before = {e["step"]: e["values"]["lr"] for e in before}
    assert after[0]["values"]["lr"] == pytest.approx(0.5 * lr_before[25], rel=1e-6)
    # The data went on: the skipped batches are not replayed, so the run has fewer steps than planned.
    assert steps_after[-1] == steps - (rewind["from_step"] - 20)
    # It ends below its pre-NaN loss.
    pre_nan = [e["values"]["loss"] for e in before if e["step"] <= 20]
    assert after[-1]["values"]["loss"] < pre_nan[-1]
    # Every checkpoint after the rewind is finite.
    state = load_checkpoint(paths.checkpoints / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # The viewers: the plot's series hold only the kept branch, the run model knows the rewind.
    store = SeriesStore()
    store.add_events(all_events)
    xs, ys = store.view(("train", "loss"), width=10_000)
    assert sorted(set(xs)) == [float(e["step"]) for e in before if e["step"] <= 20] + [float(s) for s in steps_after]
    assert all(math.isfinite(y) for y in ys)
    model = RunModel()
    model.apply_events(all_events)
    assert model.rewinds == [(rewind["from_step"], 20)] and model.step == steps_after[-1]
    assert read_json(paths.exit_json).get("health") is None


def test_a_ddp_nan_run_rewinds_every_rank_and_finishes_on_the_kept_branch(runs_dir, tmp_path):
    """The same rewind in a 2-rank gloo DDP run: both ranks go NaN at step 23, agree on the rewind in
    the logging boundary's all-reduce, reload step 20's last.pt, and finish in step with each other,
    the counter continuous from 20 and the loss below its pre-NaN value."""
    dump = tmp_path / "weights"
    paths, summary = nan_run(runs_dir, "ddp", steps=120, delay_s=0.02, timeout=60, health='[health]\nnan = "rewind"',
                             env=f'OMP_NUM_THREADS = "1"\nTRAINDECK_TEST_DUMP_WEIGHTS = "{dump}"')
    assert summary.state is RunState.FINISHED, paths.supervisor_log.read_text()
    (started,) = [e for e in events(paths, "status") if e.get("state") == "running" and e.get("source") != "supervisor"]
    assert started["world_size"] == 2 and started["backend"] == "gloo"
    health = events(paths, "health")
    assert [(e["rule"], e["step"], e["action"]) for e in health] == [("nan", 25, "rewind")], health
    (rewind,) = [e for e in events(paths, "log") if e.get("control") == "rewind"]
    assert rewind["to_step"] == 20 and rewind["from_step"] > 25
    all_events = events(paths)
    at = all_events.index(rewind)
    before, after = ([e for e in part if e["kind"] == "metric" and e.get("split") == "train"]
                     for part in (all_events[:at], all_events[at:]))
    steps_after = [e["step"] for e in after]
    assert steps_after == list(range(25, steps_after[-1] + 1, 5)), steps_after
    # Each rank's share of the data goes on: the epoch ends that many steps short of its plan.
    (epoch,) = events(paths, "epoch")
    assert epoch["step"] == started["steps_per_epoch"] - (rewind["from_step"] - 20), (epoch, started)
    assert all(math.isfinite(e["values"]["loss"]) and math.isfinite(e["values"]["grad_norm"]) for e in after)
    pre_nan = [e["values"]["loss"] for e in before if e["step"] <= 20]
    assert after[-1]["values"]["loss"] < pre_nan[-1], (pre_nan, after[-1]["values"])
    # Every rank rewound: their final weights are finite and the same (DDP kept them in step).
    weights = [torch.load(dump / f"rank-{r}.pt", map_location="cpu") for r in (0, 1)]
    for name, value in weights[0].items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, weights[1][name]), name
    assert read_json(paths.run_json)["health_rewinds"] == 1
    assert read_json(paths.exit_json).get("health") is None


SINK = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(9) + sys.stdin.read())"


def test_a_custom_script_printing_loss_nan_fires_the_rule_and_runs_the_notify_command(runs_dir, tmp_path):
    """The supervisor's rule reads the script's printed metrics; the [notify] command gets the event
    as placeholders and as JSON on stdin, once for the firing and once when the run finishes."""
    import json
    import sys

    from tests.support.profiles import custom_profile

    sink = tmp_path / "notified.txt"
    command = [sys.executable, "-c", SINK, str(sink), "{rule}|{action}|{run_id}"]
    profile = custom_profile("prints_nan.py", mode="single", args=["--steps", "14", "--nan-at", "4"], extra=f"""
[metrics]
train = ['step (?P<step>\\d+) loss (?P<loss>\\S+)']
[health]
nan = "warn"
[notify]
command = {json.dumps(command)}
""")
    paths, summary = run_to_end(profile, runs_dir, timeout=30)
    assert summary.state is RunState.FINISHED, paths.supervisor_log.read_text()
    health = events(paths, "health")
    assert [(e["rule"], e["step"], e["action"]) for e in health] == [("nan", 4, "warn")], health
    # The end is notified after exit.json (the command may read it), so it can land just after the
    # run reads as ended: wait for it rather than read once.
    wait_for(lambda: sink.exists() and len(sink.read_text().splitlines()) >= 2, 15, "the end notification")
    lines = sink.read_text().splitlines()
    assert len(lines) == 2, lines  # the firing (the NaNs after it are one incident), then the end
    args, note = lines[0].split("\t", 1)
    assert args == f"nan|warn|{paths.id}"
    note = json.loads(note)
    assert (note["kind"], note["rule"], note["step"], note["value"], note["run_id"]) == \
        ("health", "nan", 4, "nan", paths.id)
    assert "loss is nan at step 4" in note["message"]
    args, note = lines[1].split("\t", 1)
    assert args == f"finished||{paths.id}" and json.loads(note)["state"] == "finished"
