"""Rehearsal: the scaled profile (pure), the checks on synthetic run directories, and end to end
`run.py --profile NAME --rehearse` for every shipped profile on this GPU-less box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.live_runs import assert_no_health_alarms
from tests.support.locations import DATA, ROOT
from training.console import rehearsal_checks as checks
from training.console import rehearse
from training.console.rehearsal_checks import FAIL, PASS, SKIP, PhaseResult
from training.console.rehearse import FP16_NOTE, phase_profiles, rehearsal_profile
from training.profile import load_profile, parse_profile
from training.rundir import create_run_dir, write_json_atomic
from training.rundir.events_file import append_events, make_event
from training.tasks import TASKS

REHEARSE = DATA / "rehearse"
SHIPPED = ["8xb200-gnn", "4xb200-chess", "3xb200-video", "2xb200-rcl", "4x2080ti", "cpu"]
# The time budget of one profile's rehearsal in CI (two launches, export, checks).
BUDGET_S = 120


# ---- the scaled profile ------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_rehearsal_profile_keeps_the_code_paths_and_shrinks_the_work(name):
    p = load_profile(name)
    before = p.to_dict()
    rp, notes = rehearsal_profile(p, cores=2)
    assert p.to_dict() == before, "rehearsal_profile must not modify the profile it is given"
    assert rp.name == f"{name}-rehearsal"
    assert (rp.train.task, rp.launch.mode) == (p.train.task, p.launch.mode)
    assert (rp.train.epochs, rp.train.steps_per_epoch, rp.train.log_every) == (2, 3, 1)
    assert rp.train.batch_size == min(p.train.batch_size, 8)
    assert rp.checkpoint.every_epochs == 1 and rp.checkpoint.keep_last == p.checkpoint.keep_last
    assert rp.export == p.export
    assert rp.hardware == p.hardware, "the hardware requirement stays, as information"
    assert (rp.train.optimizer, rp.train.lr, rp.train.lr_scaling, rp.train.grad_clip, rp.train.channels_last) == \
        (p.train.optimizer, p.train.lr, p.train.lr_scaling, p.train.grad_clip, p.train.channels_last)
    # Model and data: the profile's [rehearse] task, else the task's tiny sizes, over its [task].
    shrink = p.rehearse.task or TASKS[p.train.task].tiny
    assert rp.task_options() == {**p.task_options(), **shrink}
    assert any("task scaled down" in n for n in notes)
    # The worker re-reads profile.toml strictly: the rehearsal profile must load as written.
    again = parse_profile(rp.to_toml(), path="rehearsal.toml")
    assert again.to_dict() == rp.to_dict()


@pytest.mark.parametrize("name,ranks,amp", [
    ("8xb200-gnn", 8, "bf16"), ("3xb200-video", 3, "bf16"), ("4x2080ti", 4, "off"), ("cpu", 2, "off"),
    ("4xb200-chess", 1, "bf16"), ("2xb200-rcl", 1, "bf16"),
])
def test_ranks_backend_and_amp(name, ranks, amp):
    p = load_profile(name)
    rp, notes = rehearsal_profile(p, cores=2)
    assert rp.world_size == ranks
    assert rp.train.amp == amp
    if p.launch.mode == "ddp":
        assert rp.launch.backend == "gloo"
        assert (p.launch.backend == "gloo") != any(n.startswith("backend") for n in notes)
    else:
        assert rp.launch.mode == "dp", "dp stays dp: the worker's single-process fallback is under test"
        assert any("one process" in n for n in notes)
    assert (FP16_NOTE in notes) == (p.train.amp == "fp16")
    assert not any("capped" in n for n in notes), "8 ranks fit 2 cores"


def test_the_4x2080ti_keeps_its_environment_and_loses_fp16():
    rp, notes = rehearsal_profile(load_profile("4x2080ti"), cores=2)
    # Its own environment kept; the GPUs hidden: a rehearsal is the CPU path (issue 15, item 3).
    assert rp.launch.env == {"NCCL_IB_DISABLE": "1", "CUDA_VISIBLE_DEVICES": ""}
    assert rp.task["depth"] == "tiny" and rp.train.amp == "off"
    assert "fp16 is GPU-only: skipped in rehearsal" in notes
    # Warm-up of 500 steps would never end in 6; it is cut so warm-up and decay both run.
    assert 1 <= rp.train.warmup_steps <= 3


def test_ranks_are_capped_by_cores_and_by_the_profile():
    gnn = load_profile("8xb200-gnn")
    rp, notes = rehearsal_profile(gnn, cores=1)
    assert rp.world_size == 4
    assert "ranks capped: 8 -> 4 (4 per core x 1 cores)" in notes
    capped = load_profile("8xb200-gnn", ["rehearse.nproc_cap=2"])
    rp, notes = rehearsal_profile(capped, cores=64)
    assert rp.world_size == 2 and any("rehearse.nproc_cap" in n for n in notes)


def test_rehearse_section_sets_the_schedule_and_batch():
    p = load_profile("3xb200-video", ["rehearse.epochs=3", "rehearse.steps_per_epoch=2", "rehearse.batch_size=5",
                                      "rehearse.task={clips = 64, width = 4}"])
    rp, _ = rehearsal_profile(p, cores=2)
    assert (rp.train.epochs, rp.train.steps_per_epoch, rp.train.batch_size) == (3, 2, 5)
    # [rehearse] task replaces the tiny sizes; the rest of the profile's [task] stays.
    assert rp.task_options()["clips"] == 64 and rp.task_options()["width"] == 4
    assert rp.task_options()["size"] == p.task_options()["size"]


def test_dp_batch_stays_divisible_by_the_gpus():
    text = (ROOT / "profiles" / "4xb200-chess.toml").read_text()
    text = text.replace("gpus = 4", "gpus = 3").replace("batch_size = 8192", "batch_size = 8193")
    p = parse_profile(text, path="chess3.toml")
    rp, _ = rehearsal_profile(p, cores=2)
    assert rp.train.batch_size == 6
    parse_profile(rp.to_toml(), path="again.toml")  # the loader's dp divisibility rule holds


def test_multi_node_rehearses_one_node():
    text = (ROOT / "profiles" / "cpu.toml").read_text().replace(
        "nproc_per_node = 2", 'nproc_per_node = 2\nnnodes = 2\nrdzv_endpoint = "10.0.0.1:29500"')
    rp, notes = rehearsal_profile(parse_profile(text, path="two-nodes.toml"), cores=2)
    assert (rp.launch.nnodes, rp.launch.rdzv_endpoint, rp.world_size) == (1, "", 2)
    assert any("multi-node" in n for n in notes)


def test_custom_script_runs_as_is():
    p = load_profile(REHEARSE / "custom.toml")
    rp, notes = rehearsal_profile(p, cores=2)
    assert rp.train.script == p.train.script and rp.train.epochs == p.train.epochs
    assert rp.world_size == 4 and rp.launch.backend == "gloo"
    assert any("cannot be scaled" in n for n in notes)


def test_phase_one_stops_an_epoch_early_and_does_not_export():
    rp, _ = rehearsal_profile(load_profile("8xb200-gnn"), cores=2)
    first, full = phase_profiles(rp)
    assert (first.train.epochs, full.train.epochs) == (1, 2)
    assert not first.export.onnx and full.export.onnx


# ---- the checks, on synthetic run directories --------------------------------------------------

def _metric(step, loss, epoch=1):
    return make_event("metric", step=step, epoch=epoch, split="train", values={"loss": loss})


def _running(start_step, world_size=2):
    return make_event("status", state="running", world_size=world_size, start_step=start_step,
                      backend="gloo", device="cpu")


def test_resume_check_catches_a_restarted_counter_and_a_repeated_step(tmp_path):
    paths = create_run_dir(tmp_path, "x")
    rp, _ = rehearsal_profile(load_profile("cpu"), cores=2)
    one = [_running(0), _metric(1, 1.0), _metric(2, 0.9), _metric(3, 0.8)]
    good = [_running(3), _metric(4, 0.7), _metric(5, 0.6), _metric(6, 0.5)]
    item = checks.check_resume(paths, rp, [PhaseResult(0, 1, one), PhaseResult(0, 1, good)], one + good, 3)
    assert item.status == PASS, item.line()
    restarted = [_running(0), _metric(1, 1.0), _metric(2, 0.9), _metric(3, 0.8)]
    item = checks.check_resume(paths, rp, [PhaseResult(0, 1, one), PhaseResult(0, 1, restarted)], one + restarted, 3)
    assert item.status == FAIL and "started at step 0" in item.detail
    replay = [_running(3), _metric(3, 0.8), _metric(4, 0.7)]
    item = checks.check_resume(paths, rp, [PhaseResult(0, 1, one), PhaseResult(0, 1, replay)], one + replay, 3)
    assert item.status == FAIL and "restarted" in item.detail
    jump = [_running(3), _metric(4, 50.0)]
    item = checks.check_resume(paths, rp, [PhaseResult(0, 1, one), PhaseResult(0, 1, jump)], one + jump, 3)
    assert item.status == FAIL and "loss jumped" in item.detail


def test_event_check_counts_junk_and_wants_a_finished_status(tmp_path):
    paths = create_run_dir(tmp_path, "x")
    rp, _ = rehearsal_profile(load_profile("cpu"), cores=2)
    events = [_running(0), _metric(1, 1.0), make_event("epoch", epoch=1),
              make_event("checkpoint", path="checkpoints/last.pt", step=1), make_event("status", state="finished")]
    assert checks.check_events(paths, rp, [PhaseResult(0, 1)], events, 0).status == PASS
    assert "2 line(s)" in checks.check_events(paths, rp, [PhaseResult(0, 1)], events, 2).detail
    item = checks.check_events(paths, rp, [PhaseResult(0, 1)], events[:-1], 0)
    assert item.status == FAIL and "final status finished" in item.detail
    item = checks.check_events(paths, rp, [PhaseResult(0, 1)], events[1:], 0)
    assert item.status == FAIL and "status running" in item.detail


def test_launch_check_names_the_rank_that_never_started(tmp_path):
    paths = create_run_dir(tmp_path, "x")
    rp, _ = rehearsal_profile(load_profile("3xb200-video"), cores=2)
    write_json_atomic(paths.exit_json, {"returncode": 1, "state": "failed", "failed_rank": 2,
                                        "error": ["File \"x.py\", line 3", "RuntimeError: gloo timed out"]})
    item = checks.check_launch(paths, rp, [PhaseResult(1, 1, [], {0: 1.0, 1: 1.0})])
    assert item.status == FAIL and "rank(s) 2 of 3" in item.detail and "rank 2: RuntimeError: gloo" in item.detail
    item = checks.check_launch(paths, rp, [PhaseResult(0, 1, [_running(0, world_size=3)], {0: 1.0, 1: 1.0, 2: 1.0}),
                                           PhaseResult(0, 1, [_running(3, world_size=3)], {0: 2.0, 1: 1.0, 2: 2.0})])
    assert item.status == FAIL and "phase 2: rank(s) 1" in item.detail, "a stale heartbeat is not a launch"


def test_first_error_prefers_the_exception_line(tmp_path):
    paths = create_run_dir(tmp_path, "x")
    assert checks.first_error(paths, [make_event("log", level="error", message="rank 0 failed at step 0: boom")]) \
        == "rank 0 failed at step 0: boom"
    # A plain traceback ends with the exception line...
    write_json_atomic(paths.exit_json, {"failed_rank": 1, "error": [
        "Traceback (most recent call last):", "  File \"m.py\", line 9, in build", "ValueError: unknown arch"]})
    assert checks.first_error(paths) == "rank 1: ValueError: unknown arch"
    # ...the supervisor's diagnosis puts it first, then the frame and the source line that raised.
    write_json_atomic(paths.exit_json, {"failed_rank": 0, "error": [
        "ValueError: unknown arch 'transformer'", "File \"p.py\", line 197, in __init__",
        "raise ValueError(f\"unknown arch {self.arch!r}\")"]})
    assert checks.first_error(paths) == "rank 0: ValueError: unknown arch 'transformer'"


def test_export_check_names_what_to_install(tmp_path, monkeypatch):
    import training.engine.export

    paths = create_run_dir(tmp_path, "x")
    rp, _ = rehearsal_profile(load_profile("8xb200-gnn"), cores=2)
    monkeypatch.setattr(training.engine.export, "missing_dependencies", lambda: ["onnxscript"])
    item = checks.check_export(paths, rp, [PhaseResult(0, 1)], 0.0)
    assert item.status == FAIL and "pip install onnxscript" in item.detail
    monkeypatch.undo()
    item = checks.check_export(paths, rp, [PhaseResult(0, 1)], 0.0)
    assert item.status == FAIL and "was not written" in item.detail
    (paths.root / rp.export.path).write_bytes(b"not a model")
    item = checks.check_export(paths, rp, [PhaseResult(0, 1)], 0.0)
    assert item.status == FAIL and "onnx.checker rejects" in item.detail
    no_export, _ = rehearsal_profile(load_profile("cpu"), cores=2)
    assert checks.check_export(paths, no_export, [PhaseResult(0, 1)], 0.0).status == SKIP


def test_one_phase_run_is_judged_with_resume_skipped(tmp_path):
    """What the TUI gets for a run it started with start_run(rehearsal_profile(p)[0], rehearsal=True)."""
    paths = create_run_dir(tmp_path, "x")
    rp, _ = rehearsal_profile(load_profile("cpu"), cores=2)
    append_events(paths.events, [make_event("status", state="starting"), _running(0), _metric(1, 1.0)])
    write_json_atomic(paths.exit_json, {"returncode": 1, "state": "failed", "failed_rank": 0,
                                        "error": ["ValueError: bad option"]})
    append_events(paths.events, [make_event("status", state="failed")])
    for r in range(2):
        write_json_atomic(paths.heartbeats / f"rank-{r}.json", {"rank": r, "t": time.time()})
    items = {i.name: i for i in rehearse.check_rehearsal(paths, rp)}
    assert list(items) == list(checks.ITEMS)
    assert items[checks.ITEM_LAUNCH].status == PASS
    assert items[checks.ITEM_STEP].status == FAIL and "ValueError: bad option" in items[checks.ITEM_STEP].detail
    assert items[checks.ITEM_RESUME].status == SKIP and items[checks.ITEM_EXPORT].status == SKIP
    assert items[checks.ITEM_EVENTS].status == PASS, "a failed run whose stream ends in 'failed' is shown right"


# ---- end to end ----------------------------------------------------------------------------------

def _rehearse(profile: str, runs_dir: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("TRAINDECK_RUNS_DIR", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--profile", profile, "--rehearse",
                           "--runs-dir", str(runs_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - t0


def _checklist(stdout: str) -> tuple[str, dict[str, str]]:
    """The headline and {item: line} from the end of the output (the checklist is printed last)."""
    lines = stdout.rstrip("\n").splitlines()[-(len(checks.ITEMS) + 1):]
    items = {}
    for line in lines[1:]:
        status, _, rest = line.strip().partition("] ")
        items[rest.split(":", 1)[0]] = status.lstrip("[")
    return lines[0], items


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_passes_its_rehearsal(name, tmp_path):
    proc, seconds = _rehearse(name, tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, f"{name} rehearsal failed ({seconds:.0f} s):\n{out[-4000:]}\n{proc.stderr[-2000:]}"
    headline, items = _checklist(out)
    assert headline.startswith(f"rehearsal of {name} passed"), out[-2000:]
    assert list(items) == list(checks.ITEMS), "run.py's output ends with the checklist, one line per item"
    wanted_export = PASS if load_profile(name).export.onnx else SKIP
    assert items == {**{i: PASS for i in checks.ITEMS}, checks.ITEM_EXPORT: wanted_export}, out[-2000:]
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert run_dir.name.endswith(f"-{name}-rehearsal")
    result = json.loads((run_dir / "rehearsal.json").read_text())
    assert result["ok"] and [i["status"] for i in result["items"]].count(FAIL) == 0
    assert json.loads((run_dir / "run.json").read_text())["rehearsal"] is True
    logged = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any(e.get("kind") == "log" and e.get("checklist") for e in logged), "the TUI sees the checklist"
    assert_no_health_alarms(run_dir)  # both phases of a healthy rehearsal: no rule fired
    print(f"{name}: rehearsal {seconds:.1f} s")
    assert seconds < BUDGET_S, f"{name} took {seconds:.0f} s; a rehearsal must stay cheap"


@pytest.mark.slow
def test_a_broken_profile_fails_with_the_item_and_the_error(tmp_path):
    proc, seconds = _rehearse(str(REHEARSE / "broken.toml"), tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    headline, items = _checklist(out)
    assert "FAILED" in headline and "forward and backward pass" in headline, out[-3000:]
    assert items[checks.ITEM_STEP] == FAIL and items[checks.ITEM_LAUNCH] == PASS
    step_line = next(line for line in out.splitlines() if line.strip().startswith(f"[FAIL] {checks.ITEM_STEP}"))
    assert "RuntimeError" in step_line and "rank 1 raises after step 1" in step_line, step_line
    assert items[checks.ITEM_RESUME] == SKIP, "no phase 2 after a failed phase 1"
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    result = json.loads((run_dir / "rehearsal.json").read_text())
    assert not result["ok"] and len(result["phases"]) == 1


@pytest.mark.slow
def test_a_custom_script_is_rehearsed_as_is(tmp_path):
    proc, _ = _rehearse(str(REHEARSE / "custom.toml"), tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    _, items = _checklist(out)
    assert items[checks.ITEM_LAUNCH] == PASS and items[checks.ITEM_STEP] == PASS \
        and items[checks.ITEM_EVENTS] == PASS, out[-2000:]
    assert items[checks.ITEM_RESUME] == SKIP and items[checks.ITEM_EXPORT] == SKIP
    assert "cannot be scaled" in out
