"""`run.py --control RUN ACTION` end to end on the built-in worker: 2 gloo ranks through torchrun."""

from __future__ import annotations

import time

import pytest
import torch

import run as cli
from tests.support.live_runs import heartbeat_steps, stop_quietly
from tests.support.profiles import cpu_profile
from tests.support.waiting import wait_for
from training.console import runs
from training.engine.checkpoint import load_checkpoint, load_model_weights
from training.rundir import RunState, create_run_dir, hostname, list_run_dirs, read_json, write_json_atomic
from training.rundir.events_file import read_all
from training.tasks import load_task_module


def control(paths, action: str, capsys) -> str:
    rc = cli.main(["--runs-dir", str(paths.root.parent), "--control", paths.id, action])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out.strip()


def events_of(paths, **match):
    return [e for e in read_all(paths.events) if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    d = tmp_path / "runs"
    yield d
    for paths in list_run_dirs(d):  # a failing test must not leave a run behind
        stop_quietly(paths)


def wait_training(paths, min_step: int = 6) -> None:
    def ready():
        summary = runs.run_summary(paths)
        assert summary.live, f"run ended early: {summary}\n{paths.supervisor_log.read_text()[-3000:]}"
        steps = heartbeat_steps(paths)
        return len(steps) == 2 and min(steps.values()) >= min_step
    wait_for(ready, 30, f"both ranks past step {min_step}", paths=paths)


@pytest.mark.slow
def test_save_now_then_pause_and_resume(runs_dir, capsys):
    paths = runs.start_run(cpu_profile(), runs_dir)
    try:
        wait_training(paths)

        # save: a checkpoint event at the next logging boundary, then the acknowledgement.
        before = max(heartbeat_steps(paths).values())
        ack = control(paths, "save", capsys)
        assert ack.startswith("saved checkpoints/last.pt at step ")
        saved_step = int(ack.split("at step ")[1].split()[0])
        assert before <= saved_step <= before + 5 + 5  # the next log_every boundary (or the one after)
        [ckpt] = [e for e in events_of(paths, kind="checkpoint") if e.get("step") == saved_step]
        assert ckpt["path"] == "checkpoints/last.pt"
        state = load_checkpoint(paths.checkpoints / "last.pt")
        assert state["step"] == saved_step

        # pause: the step counter stops on every rank ...
        ack = control(paths, "pause", capsys)
        assert ack.startswith("paused at step ")
        paused_step = int(ack.split("at step ")[1].split()[0])
        wait_for(lambda: all(hb_state == "paused" for hb_state in _states(paths).values()), 5, "paused", paths=paths)
        held = heartbeat_steps(paths)
        time.sleep(2.0)
        assert heartbeat_steps(paths) == held == {0: paused_step, 1: paused_step}
        assert not [e for e in events_of(paths, kind="metric") if e.get("step", 0) > paused_step]
        assert runs.run_summary(paths).live

        # ... and resume starts it again.
        ack = control(paths, "resume", capsys)
        assert ack == f"resumed at step {paused_step}"
        wait_for(lambda: min(heartbeat_steps(paths).values()) >= paused_step + 10, 15, "steps after resume", paths=paths)
        # Metric events reach events.jsonl through the reporter's flusher (a batch within 0.25 s
        # on an idle box), after the heartbeat that already shows the step.
        wait_for(lambda: [e for e in events_of(paths, kind="metric") if e.get("step", 0) > paused_step], 10,
                 "a metric event after the resume", paths=paths)
    finally:
        stop_quietly(paths)


@pytest.mark.slow
def test_save_and_stop_ends_stopped_with_a_loadable_checkpoint(runs_dir, capsys):
    profile = cpu_profile()
    paths = runs.start_run(profile, runs_dir)
    try:
        wait_training(paths)
        ack = control(paths, "save-stop", capsys)
        assert ack.startswith("saved step ") and ack.endswith("stopping on request")
        step = int(ack.split()[2].rstrip(";"))
        wait_for(lambda: not runs.run_summary(paths).live, 20, "the run to end", paths=paths)
    finally:
        stop_quietly(paths)
    summary = runs.run_summary(paths)
    assert summary.state is RunState.STOPPED
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "stopped" and exit_data["returncode"] == 0
    state = load_checkpoint(paths.checkpoints / "last.pt")
    assert state["step"] == step
    # The weights load into the task's model (strictly): a usable checkpoint, not just a file.
    model = load_task_module(profile.train.task).build(profile.task_options(), 0).model()
    load_model_weights(model, state["model"])
    assert torch.equal(model.state_dict()[next(iter(state["model"]))], next(iter(state["model"].values())))
    assert events_of(paths, kind="checkpoint", step=step)


def _states(paths) -> dict[int, str]:
    from traindeck.heartbeat import read_heartbeats

    return {rank: hb.get("state") for rank, hb in read_heartbeats(paths.root).items()}


# ------------------------------------------------------------------ CLI without a live run


def _finished_run(tmp_path):
    paths = create_run_dir(tmp_path / "runs", "done")
    write_json_atomic(paths.run_json, {"id": paths.id, "host": hostname(), "state": "finished",
                                       "supervisor": {"pid": None, "create_time": None}, "processes": []})
    write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished"})
    return paths


def test_cli_control_refuses_a_finished_run(tmp_path, capsys):
    paths = _finished_run(tmp_path)
    rc = cli.main(["--runs-dir", str(paths.root.parent), "--control", paths.id, "pause"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"cannot pause run {paths.id}" in err and "live runs only" in err
    assert not paths.control.exists()


def test_cli_control_rejects_an_unknown_action(tmp_path, capsys):
    paths = _finished_run(tmp_path)
    rc = cli.main(["--runs-dir", str(paths.root.parent), "--control", paths.id, "explode"])
    assert rc == 2
    assert "unknown control action 'explode'" in capsys.readouterr().err


def test_cli_control_names_a_missing_run(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    rc = cli.main(["--runs-dir", str(tmp_path / "runs"), "--control", "nope", "save"])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
