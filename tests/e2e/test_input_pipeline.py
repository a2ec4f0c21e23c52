"""`[train] num_workers` (issue 15, item 5): DataLoader workers per rank with per-mode defaults,
persistent for the run; the batches (a pure function of seed and index) are the same either way."""

from __future__ import annotations

import pytest

from tests.support import engine
from training.engine.data import loader_workers
from training.profile import load_profile


@pytest.mark.parametrize("setting, device, mode, procs, cpus, expected", [
    (-1, "cpu", "ddp", 2, 64, 0),      # CPU training: the ranks use the cores themselves
    (-1, "cuda", "ddp", 8, 224, 4),    # 8x B200 box: 4 per rank
    (-1, "cuda", "ddp", 4, 16, 3),     # 4x 2080 Ti lab box: leave a core per rank
    (-1, "cuda", "dp", 1, 64, 8),      # one process feeds every GPU
    (-1, "cuda", "single", 1, 4, 3),
    (-1, "cuda", "ddp", 8, 8, 0),      # no core to spare
    (2, "cpu", "single", 1, 2, 2),     # the profile's own number always wins
])
def test_auto_workers_per_mode(setting, device, mode, procs, cpus, expected):
    assert loader_workers(setting, device, mode, procs, cpus) == expected


def test_num_workers_is_a_profile_key_with_auto_default():
    assert load_profile("cpu").train.num_workers == -1
    assert load_profile("cpu", ["train.num_workers=3"]).train.num_workers == 3


@pytest.mark.slow
def test_persistent_workers_train_the_same_steps_as_none(tmp_path):
    losses = {}
    for workers in (0, 2):
        toml = f"""
[launch]
mode = "single"
[train]
task = "tiny"
epochs = 2
steps_per_epoch = 3
batch_size = 16
log_every = 1
num_workers = {workers}
[task]
samples = 1024
features = 8
hidden = 8
"""
        paths = engine.make_run(tmp_path / "runs", toml, name=f"w{workers}")
        result = engine.run(paths)
        assert result.returncode == 0, result.stderr[-2000:]
        [status] = [e for e in engine.events(paths, "status") if e.get("state") == "running"]
        assert status["num_workers"] == workers
        losses[workers] = [round(e["values"]["loss"], 6) for e in engine.events(paths, "metric")
                           if e["split"] == "train"]
    assert losses[0] == losses[2] and len(losses[0]) == 6
