"""Checkpoints: fixed keys, weights_only loading, either state-dict form, atomic writes."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.support import engine
from training.engine import checkpoint as ckpt


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def full_checkpoint(model, step=7, **kw):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return ckpt.make_checkpoint(model=model, optimizer=opt, scheduler=sched,
                                scaler=torch.amp.GradScaler("cpu", enabled=False),
                                epoch=2, epoch_step=3, epoch_complete=False, step=step,
                                rng=[ckpt.capture_rng_state()], profile_digest="abc", task="tiny",
                                monitor=("val_loss", "min"), monitor_value=1.5, best=1.25, **kw)


def test_round_trip_keeps_every_key_and_loads_with_weights_only(tmp_path):
    model = small_model()
    state = full_checkpoint(model)
    path = tmp_path / "last.pt"
    nbytes = ckpt.save_checkpoint(state, path)
    assert nbytes == path.stat().st_size > 0
    # weights_only=True is what load_checkpoint uses; load it that way directly too.
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "model", "optimizer", "scaler", "scheduler", "epoch", "epoch_step",
                        "epoch_complete", "step", "rng", "profile_digest", "task", "world_size", "monitor", "best"}
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["epoch"] == 2 and loaded["epoch_step"] == 3
    assert loaded["monitor"] == {"name": "val_loss", "mode": "min", "value": 1.5} and loaded["best"] == 1.25
    fresh = small_model()
    ckpt.load_model_weights(fresh, loaded["model"])
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    opt.load_state_dict(loaded["optimizer"])
    assert opt.state_dict()["state"][0]["step"] == 1


def test_rng_state_restores_torch_python_and_numpy(tmp_path):
    np = pytest.importorskip("numpy")
    torch.manual_seed(3)
    random.seed(3)
    np.random.seed(3)
    ckpt.save_checkpoint({"rng": [ckpt.capture_rng_state()]}, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    ckpt.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"][0])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_wrapped_model_saves_without_module_prefix_and_loads_either_form(tmp_path):
    inner = small_model()
    wrapped = nn.DataParallel(inner)  # on a CPU box DataParallel just holds the module
    state = full_checkpoint(wrapped)
    assert not any(k.startswith("module.") for k in state["model"])
    ckpt.save_checkpoint(state, tmp_path / "a.pt")
    # Someone else's bare DP state dict, with the prefix:
    torch.save(wrapped.state_dict(), tmp_path / "bare.pt")
    assert all(k.startswith("module.") for k in torch.load(tmp_path / "bare.pt", weights_only=True))
    for name in ("a.pt", "bare.pt"):
        loaded = ckpt.load_checkpoint(tmp_path / name)
        for target in (small_model(), nn.DataParallel(small_model())):
            ckpt.load_model_weights(target, loaded["model"])
            got = ckpt.unwrap(target).state_dict()
            for k, v in inner.state_dict().items():
                assert torch.equal(got[k], v), (name, k)
    assert ckpt.load_checkpoint(tmp_path / "bare.pt")["format"] is None


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ckpt.CheckpointLoadError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointLoadError, match="cannot read"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    other = nn.Linear(3, 3)
    ckpt.save_checkpoint(full_checkpoint(small_model()), tmp_path / "ok.pt")
    with pytest.raises(ckpt.CheckpointLoadError, match="does not fit"):
        ckpt.load_model_weights(other, ckpt.load_checkpoint(tmp_path / "ok.pt")["model"])


def _assert_intact(path: Path, step: int):
    assert ckpt.load_checkpoint(path)["step"] == step
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_disk_full_keeps_previous_checkpoint_and_removes_temp(tmp_path, monkeypatch):
    files = ckpt.CheckpointFiles(tmp_path)
    model = small_model()
    files.write(ckpt.serialize(full_checkpoint(model, step=1)), [files.last])
    real_write = os.write

    def write_until_full(fd, data):
        if len(data) > 64:  # some bytes land, then ENOSPC, like a filling disk
            real_write(fd, bytes(data[:64]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(ckpt.os, "write", write_until_full)
    with pytest.raises(ckpt.CheckpointWriteError, match="No space left") as info:
        files.write(ckpt.serialize(full_checkpoint(model, step=2)), [files.last])
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    _assert_intact(files.last, 1)


def test_failed_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    files = ckpt.CheckpointFiles(tmp_path)
    files.write(ckpt.serialize(full_checkpoint(small_model(), step=1)), [files.last])

    def refuse(src, dst):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(ckpt.os, "replace", refuse)
    with pytest.raises(ckpt.CheckpointWriteError):
        files.write(ckpt.serialize(full_checkpoint(small_model(), step=2)), [files.last])
    monkeypatch.undo()
    _assert_intact(files.last, 1)


def test_keep_last_prunes_oldest_epoch_files(tmp_path):
    files = ckpt.CheckpointFiles(tmp_path, keep_last=2)
    for e in (1, 2, 3, 10):
        files.epoch_file(e).write_bytes(b"x")
    (tmp_path / "epoch-notes.pt").write_bytes(b"x")  # not ours: left alone
    removed = files.prune()
    assert [p.name for p in removed] == ["epoch-0001.pt", "epoch-0002.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.pt", "epoch-0010.pt", "epoch-notes.pt"]


@pytest.mark.parametrize("value,best,mode,expected", [
    (1.0, None, "min", True), (1.0, 2.0, "min", True), (2.0, 1.0, "min", False), (1.0, 1.0, "min", False),
    (0.9, 0.8, "max", True), (0.7, 0.8, "max", False), (float("nan"), None, "min", False), (None, 1.0, "min", False),
])
def test_improved(value, best, mode, expected):
    assert ckpt.improved(value, best, mode) is expected


@pytest.mark.slow
def test_worker_disk_full_on_checkpoint_exits_cleanly_with_previous_last_pt(tmp_path):
    paths = engine.make_run(tmp_path / "runs", """
[launch]
mode = "single"
[train]
task = "tiny"
epochs = 3
batch_size = 32
steps_per_epoch = 5
log_every = 5
[task]
samples = 512
[checkpoint]
keep_last = 0
""")
    # Save 1 is last.pt of epoch 1, save 2 best.pt of epoch 1 (written together), save 3 = epoch 2's last.pt.
    result = engine.run(paths, ENGINE_TEST_ENOSPC_ON_SAVE="3")
    assert result.returncode == 1, result.stderr
    assert "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr  # an expected failure, said plainly
    errors = [e for e in engine.events(paths, "log") if e["level"] == "error"]
    assert len(errors) == 1 and "checkpoint write failed at step 10" in errors[0]["message"]
    assert ckpt.load_checkpoint(paths.checkpoints / "last.pt")["step"] == 5
    assert not [p for p in paths.checkpoints.iterdir() if p.name.endswith(".tmp")]
