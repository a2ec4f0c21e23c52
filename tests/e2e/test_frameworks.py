"""A user's unmodified framework script under traindeck, with `[metrics] preset` and nothing else:
live points at the rate the framework shows them, and a checkpoint event for what it saves where
it saves by default. Real Lightning, Trainer and Keras runs (the `test` extras), CPU only, tiny
models built from configs, nothing downloaded (HF_HUB_OFFLINE=1). Each run carries every check
made on it: these runs are the expensive part; the parsers and watchers are tested on recorded
output in tests/unit/test_log_metrics.py and test_checkpoint_watch.py.

What counts as "printed" is read from rank 0's log with a plain regex of the numbers the bar
shows, independent of the preset: every value the framework printed is a point.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.support.live_runs import events, wait_done
from tests.support.locations import SCRIPTS
from training.console import runs
from training.profile import load_profile
from training.rundir import RunPaths, RunState
from training.rundir.logs import rank0_stderr, rank0_stdout

pytestmark = pytest.mark.slow

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_script(tmp_path: Path, runs_dir: Path, monkeypatch, script: str, args: list[str], preset: str,
               launch: str = 'mode = "single"', env: str = "") -> RunPaths:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(SCRIPTS / script, project / script)
    (project / "traindeck.toml").write_text(
        f'name = "{preset}"\n[launch]\n{launch}\nbackend = "gloo"\n'
        f'env = {{ HF_HUB_OFFLINE = "1", OMP_NUM_THREADS = "1"{env} }}\n'
        f'[train]\nscript = "{script}"\nargs = {args!r}\n[metrics]\npreset = "{preset}"\n'.replace("'", '"'))
    monkeypatch.chdir(project)
    paths = runs.start_run(load_profile("traindeck.toml"), runs_dir)
    assert wait_done(paths, timeout=120).state is RunState.FINISHED, paths.supervisor_log.read_text()
    return paths


def printed(paths: RunPaths, pattern: str, stream=rank0_stdout) -> list[float]:
    log = stream(paths)
    assert log is not None
    return [float(v) for v in re.findall(pattern, _ANSI.sub("", log.read_text(errors="replace")))]


def metric(paths: RunPaths, split: str, name: str) -> list[tuple[int, float]]:
    return [(e["step"], e["values"][name]) for e in events(paths, "metric")
            if e["split"] == split and name in e["values"]]


def checkpoints(paths: RunPaths) -> dict[str, dict]:
    return {e["path"]: e for e in events(paths, "checkpoint")}


@pytest.mark.parametrize("bar, mode", [("rich", "single"), ("rich", "ddp"), ("tqdm", "ddp")])
def test_lightning_every_step_its_bar_shows_and_its_checkpoints(tmp_path, runs_dir, monkeypatch, bar, mode):
    # c10d under ddp, as in test_user_project: torch 2.13's gloo can abort a rank in std::terminate as it
    # leaves the group (bare torchrun too); Lightning's teardown hit it on the static rendezvous under load
    # (2 of several runs), c10d's timing did not. Reading the bars is what this test is about.
    launch = 'mode = "ddp"\nnproc_per_node = 2\nrdzv_backend = "c10d"' if mode == "ddp" else 'mode = "single"'
    paths = run_script(tmp_path, runs_dir, monkeypatch, "lightning_fit.py", [bar] if bar == "tqdm" else [],
                       "lightning", launch)
    sep = ": " if bar == "rich" else "="
    train, val = metric(paths, "train", "loss"), metric(paths, "val", "loss")
    # Every train loss the bar drew is a point, in step order: 2 epochs of 8 batches (4 per rank
    # under DDP, where rank 0's bar is the one read); log_every_n_steps=2 asks for 8 (4).
    steps_per_epoch = 8 if mode == "single" else 4
    assert {v for _, v in train} == set(printed(paths, rf"train_loss{sep}([\d.]+)"))
    assert len(train) >= steps_per_epoch and [s for s, _ in train] == sorted({s for s, _ in train})
    assert train[-1][0] == 2 * steps_per_epoch
    # Its evaluations, one per epoch (and the sanity check's, which the Rich bar shows), each once
    # however often it is redrawn.
    assert {v for _, v in val} == set(printed(paths, rf"val_loss{sep}([\d.]+)"))
    assert [s for s, _ in val if s > 0] == [steps_per_epoch, 2 * steps_per_epoch]
    assert len(val) == (3 if bar == "rich" else 2) and len(metric(paths, "val", "mae")) == len(val)
    # Lightning's default ModelCheckpoint: lightning_logs/version_0/checkpoints/, the last epoch's kept.
    [kept] = (paths.root.parent.parent / "project" / "lightning_logs").glob("version_*/checkpoints/*.ckpt")
    found = checkpoints(paths)
    shown = str(kept.relative_to(tmp_path / "project"))
    assert shown in found and found[shown]["step"] == 2 * steps_per_epoch and found[shown]["epoch"] == 2
    assert found[shown]["bytes"] == kept.stat().st_size


def test_hf_trainer_log_dicts_evaluations_and_checkpoint_directories(tmp_path, runs_dir, monkeypatch):
    paths = run_script(tmp_path, runs_dir, monkeypatch, "hf_trainer_fit.py", [], "hf-trainer")
    train, val = metric(paths, "train", "loss"), metric(paths, "val", "loss")
    assert [v for _, v in train] == printed(paths, r"'loss': '([\d.]+)'") and len(train) == 6  # logging_steps=2
    assert [v for _, v in val] == printed(paths, r"'eval_loss': '([\d.]+)'") and len(val) == 2  # eval_steps=6
    found = checkpoints(paths)
    assert {p: e.get("step") for p, e in found.items()} == {"out-hf/checkpoint-6": 6, "out-hf/checkpoint-12": 12}
    model = tmp_path / "project" / "out-hf" / "checkpoint-12" / "model.safetensors"
    assert found["out-hf/checkpoint-12"]["bytes"] > model.stat().st_size  # the whole directory


def test_keras_fit_progress_lines_validation_and_model_checkpoints(tmp_path, runs_dir, monkeypatch):
    paths = run_script(tmp_path, runs_dir, monkeypatch, "keras_fit.py", [], "keras", env=', KERAS_BACKEND = "torch"')
    train, val = metric(paths, "train", "loss"), metric(paths, "val", "loss")
    drawn = printed(paths, r"\d/6 \S+ \S+ \S+ - loss: ([\d.]+)")
    # Keras redraws its line every 50 ms: every loss it drew is a point, more than one per epoch.
    assert {v for _, v in train} == set(drawn) and len(train) > 3
    assert [v for _, v in val] == printed(paths, r"val_loss: ([\d.]+)") and len(val) == 3
    assert sorted(checkpoints(paths)) == [f"ckpt/model-0{n}.keras" for n in (1, 2, 3)]


def test_a_plain_tqdm_loop_under_ddp_is_read_off_rank_0s_stderr(tmp_path, runs_dir, monkeypatch):
    # torchrun keeps each rank's stdout and stderr apart, and tqdm draws on stderr: both are read,
    # as one rank-0.log holds both in a single-process launch. (c10d: see the Lightning test.)
    paths = run_script(tmp_path, runs_dir, monkeypatch, "tqdm_loop.py", [], "tqdm",
                       'mode = "ddp"\nnproc_per_node = 2\nrdzv_backend = "c10d"')
    drawn = printed(paths, r"loss=([\d.]+)", stream=rank0_stderr)
    train = metric(paths, "train", "loss")
    assert drawn and {v for _, v in train} == set(drawn)
    assert [s for s, _ in train] == sorted({s for s, _ in train})
