"""The training worker end to end on CPU: ddp (2 gloo processes), dp and single.

Every test here starts real processes (marked slow); sizes are tiny so each takes seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import time

import pytest
import torch

from tests.support import engine
from tests.support.processes import kill_tree
from tests.support.waiting import wait_for
from traindeck.heartbeat import read_heartbeats
from training.engine.checkpoint import load_checkpoint
from training.engine.export import export_onnx
from training.rundir.control import send_and_wait

pytestmark = pytest.mark.slow


def profile(mode: str, *, epochs=2, steps=6, log_every=3, extra_train="", extra="", nproc=2, samples=1024):
    launch_line = f'mode = "{mode}"' + (f"\nnproc_per_node = {nproc}\nbackend = \"auto\"" if mode == "ddp" else "")
    return f"""
[launch]
{launch_line}
[train]
task = "tiny"
epochs = {epochs}
batch_size = 16
steps_per_epoch = {steps}
log_every = {log_every}
lr = 0.01
{extra_train}
[task]
samples = {samples}
hidden = 16
{extra}
"""


def checked(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_ddp_two_ranks_end_with_identical_weights_and_report_events(tmp_path):
    paths = engine.make_run(tmp_path / "runs", profile("ddp", extra_train='lr_scaling = "linear"',
                                                       extra="[checkpoint]\nkeep_last = 1"))
    dump = tmp_path / "weights"
    # The engine test task reports loss components (loss/ce, loss/reg); the real tiny has none.
    checked(engine.run(paths, nproc=2, TRAINDECK_TEST_DUMP_WEIGHTS=str(dump), ENGINE_TEST_TASK="engine"))

    w0 = torch.load(dump / "rank-0.pt", weights_only=True)
    w1 = torch.load(dump / "rank-1.pt", weights_only=True)
    assert w0.keys() == w1.keys() and not any(k.startswith("module.") for k in w0)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # ...and they trained: the final weights differ from the epoch-1 checkpoint's.
    first = load_checkpoint(paths.checkpoints / "last.pt")
    assert first["step"] == 12 and first["world_size"] == 2 and first["epoch_complete"]
    assert len(first["rng"]) == 2  # every rank's RNG state, so a resume continues each stream

    status = engine.events(paths, "status")[0]
    assert status["state"] == "running" and status["world_size"] == 2 and status["backend"] == "gloo"
    assert status["device"] == "cpu" and status["steps_per_epoch"] == 6 and status["start_step"] == 0
    train = [e for e in engine.events(paths, "metric") if e["split"] == "train"]
    assert [e["step"] for e in train] == [3, 6, 9, 12]
    values = train[0]["values"]
    assert set(values) == {"loss", "loss/ce", "loss/reg", "grad_norm", "lr", "samples_per_s"}
    # The gradient norm without grad_clip, on every logging step (DDP ranks agree on it).
    assert all(0 < e["values"]["grad_norm"] < 1e3 for e in train)
    assert train[-1]["values"]["loss"] < train[0]["values"]["loss"]
    val = [e for e in engine.events(paths, "metric") if e["split"] == "val"]
    assert len(val) == 2 and "loss" in val[0]["values"] and not any(k.startswith("val_") for k in val[0]["values"])
    epochs = engine.events(paths, "epoch")
    assert [(e["epoch"], e["step"], e["epochs"]) for e in epochs] == [(1, 6, 2), (2, 12, 2)]
    ckpts = engine.events(paths, "checkpoint")
    assert {"checkpoints/last.pt", "checkpoints/epoch-0002.pt", "checkpoints/best.pt"} <= {c["path"] for c in ckpts}
    assert all(c["bytes"] > 0 and c["seconds"] >= 0 and c["monitor"] == "val_loss" for c in ckpts)
    assert not (paths.checkpoints / "epoch-0001.pt").exists()  # keep_last = 1
    assert any("lr scaled linear" in e["message"] for e in engine.events(paths, "log"))
    beats = read_heartbeats(paths.root)
    assert sorted(beats) == [0, 1] and all(b["step"] == 12 and b["state"] == "finished" for b in beats.values())


def test_single_and_dp_run_and_dp_says_it_runs_as_one_process(tmp_path):
    single = engine.make_run(tmp_path / "runs", profile("single", extra_train='amp = "bf16"\ngrad_accum = 2\n'
                                                        'grad_clip = 1.0\noptimizer = "sgd"\nwarmup_steps = 3\n'
                                                        'schedule = "constant"'), name="single")
    checked(engine.run(single))
    train = [e for e in engine.events(single, "metric") if e["split"] == "train"]
    assert [e["step"] for e in train] == [3, 6, 9, 12]
    assert [round(e["values"]["lr"], 6) for e in train] == [0.01] * 4  # warm-up done at step 3, then constant
    assert engine.events(single, "status")[0]["world_size"] == 1

    dp = engine.make_run(tmp_path / "runs", profile("dp", extra_train='amp = "fp16"'), name="dp")
    checked(engine.run(dp))
    messages = [e["message"] for e in engine.events(dp, "log")]
    assert any("dp: no GPU visible, running as a single process" in m for m in messages)
    assert any("fp16 needs a GPU" in m for m in messages)
    assert load_checkpoint(dp.checkpoints / "last.pt")["step"] == 12


def test_checkpoints_move_between_ddp_dp_and_single(tmp_path):
    ddp = engine.make_run(tmp_path / "runs", profile("ddp", epochs=1), name="ddp")
    checked(engine.run(ddp, nproc=2))
    ddp_last = ddp.checkpoints / "last.pt"
    ddp_weights = load_checkpoint(ddp_last)["model"]

    # ddp -> single: starts from the ddp checkpoint's weights and step counter.
    single = engine.make_run(tmp_path / "runs", profile("single", epochs=2, extra_train="")
                             + f'\n[checkpoint]\nresume = "{ddp_last}"\n', name="single")
    dump = tmp_path / "single-weights"
    checked(engine.run(single, TRAINDECK_TEST_DUMP_WEIGHTS=str(dump)))
    assert engine.events(single, "status")[0]["start_step"] == 6
    assert any("written with a different profile" in e["message"] and e["level"] == "warning"
               for e in engine.events(single, "log"))
    assert [e["epoch"] for e in engine.events(single, "epoch")] == [2]
    assert load_checkpoint(single.checkpoints / "last.pt")["step"] == 12

    # single -> dp (as a bare DataParallel-style state dict with "module." keys) -> ddp
    bare = tmp_path / "bare_dp.pt"
    torch.save({f"module.{k}": v for k, v in ddp_weights.items()}, bare)
    dp = engine.make_run(tmp_path / "runs", profile("dp", epochs=1) + f'\n[checkpoint]\nresume = "{bare}"\n',
                         name="dp")
    checked(engine.run(dp))
    assert any("loaded weights from" in e["message"] for e in engine.events(dp, "log"))
    ddp2 = engine.make_run(tmp_path / "runs", profile("ddp", epochs=3)
                           + f'\n[checkpoint]\nresume = "{single.checkpoints / "last.pt"}"\n', name="ddp2")
    checked(engine.run(ddp2, nproc=2))
    assert engine.events(ddp2, "status")[0]["start_step"] == 12
    assert [e["epoch"] for e in engine.events(ddp2, "epoch")] == [3]


def test_sigkill_mid_run_then_resume_continues_the_step_counter(tmp_path):
    paths = engine.make_run(tmp_path / "runs", profile("ddp", epochs=3, steps=12, log_every=2)
                            + "\n[checkpoint]\nevery_steps = 4\nkeep_last = 0\n")
    proc = engine.start(paths, nproc=2, TRAINDECK_TEST_STEP_DELAY_S="0.04")
    try:
        wait_for(lambda: any(c["step"] >= 16 for c in engine.events(paths, "checkpoint")), timeout=40,
                        what="a checkpoint in epoch 2")
    finally:
        kill_tree(proc)
    saved_step = load_checkpoint(paths.checkpoints / "last.pt")["step"]
    assert 16 <= saved_step < 36, saved_step
    events_before = len(engine.events(paths))

    checked(engine.run(paths, nproc=2))
    after = engine.events(paths)[events_before:]
    status = [e for e in after if e["kind"] == "status"]
    assert status[0]["start_step"] == saved_step
    steps_after = [e["step"] for e in after if e["kind"] == "metric" and e["split"] == "train"]
    assert steps_after and steps_after[0] == saved_step + (2 - saved_step % 2)
    assert steps_after == sorted(steps_after) and steps_after[-1] == 36
    epochs = [e["epoch"] for e in engine.events(paths, "epoch")]
    assert max(epochs) == 3 and set(epochs) == {1, 2, 3}
    final = load_checkpoint(paths.checkpoints / "last.pt")
    assert final["step"] == 36 and final["epoch"] == 3 and final["epoch_complete"]
    assert any("resumed from" in e["message"] for e in after if e["kind"] == "log")

    # A finished run started again (here without torchrun, which the worker notes) has nothing left to do.
    n_events = len(engine.events(paths))
    checked(engine.run(paths))
    again = engine.events(paths)[n_events:]
    assert not [e for e in again if e["kind"] in ("metric", "epoch", "checkpoint")]
    assert any("not started by torchrun" in e.get("message", "") for e in again)
    assert load_checkpoint(paths.checkpoints / "last.pt")["step"] == 36


def test_control_save_pause_resume_save_stop_on_two_rank_ddp(tmp_path):
    paths = engine.make_run(tmp_path / "runs", profile("ddp", epochs=1, steps=2000, log_every=2, samples=80000)
                            + "\n[checkpoint]\nevery_epochs = 0\nkeep_last = 0\n")
    proc = engine.start(paths, nproc=2, TRAINDECK_TEST_STEP_DELAY_S="0.01")
    try:
        wait_for(lambda: engine.events(paths, "metric"), timeout=40, what="the first metric")

        ack = send_and_wait(paths, "save", timeout_s=20)
        assert "saved checkpoints/last.pt at step" in ack
        saved = load_checkpoint(paths.checkpoints / "last.pt")
        assert not saved["epoch_complete"] and len(saved["rng"]) == 2

        ack = send_and_wait(paths, "pause", timeout_s=20)
        assert "paused at step" in ack
        paused_step = int(ack.rsplit(" ", 1)[1])
        beats = wait_for(lambda: (b := read_heartbeats(paths.root)) and len(b) == 2
                                and all(x["state"] == "paused" for x in b.values()) and b,
                                timeout=5, what="both ranks paused")
        assert all(b["step"] == paused_step for b in beats.values())
        # Stack dumps on SIGUSR1 while paused: every rank writes its threads' stacks.
        for b in beats.values():
            os.kill(b["pid"], signal.SIGUSR1)
        wait_for(lambda: all((paths.dumps / f"rank-{r}.txt").exists()
                                    and "File" in (paths.dumps / f"rank-{r}.txt").read_text() for r in (0, 1)),
                        timeout=5, what="stack dumps")
        time.sleep(1.2)  # stays paused (ranks keep a cheap all-reduce going meanwhile)
        assert all(b["step"] == paused_step for b in read_heartbeats(paths.root).values())

        ack = send_and_wait(paths, "resume", timeout_s=20)
        assert ack == f"resumed at step {paused_step}"
        wait_for(lambda: all(b["step"] > paused_step + 4 for b in read_heartbeats(paths.root).values()),
                        timeout=20, what="training to continue")

        ack = send_and_wait(paths, "save-stop", timeout_s=20)
        assert "stopping on request" in ack
        assert proc.wait(timeout=30) == 0, engine.launch_log(paths)[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    stopped = [e for e in engine.events(paths, "status") if e["state"] == "stopped"]
    assert len(stopped) == 1 and "stopped on request after saving step" in stopped[0]["message"]
    stop_step = int(stopped[0]["message"].rsplit(" ", 1)[1])
    assert load_checkpoint(paths.checkpoints / "last.pt")["step"] == stop_step > paused_step
    assert stop_step < 2000  # it really stopped early
    acks = [e for e in engine.events(paths, "log") if "control" in e]
    assert [a["control"] for a in acks] == ["save", "pause", "resume", "save-stop"]
    assert [a["seq"] for a in acks] == [1, 2, 3, 4]


def test_sigterm_exits_promptly(tmp_path):
    paths = engine.make_run(tmp_path / "runs", profile("single", epochs=1, steps=5000, samples=100000))
    proc = engine.start(paths, TRAINDECK_TEST_STEP_DELAY_S="0.01")
    try:
        wait_for(lambda: engine.events(paths, "metric"), timeout=30, what="training")
        seen = max(e["step"] for e in engine.events(paths, "metric"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    [said] = [e["message"] for e in engine.events(paths, "log") if "SIGTERM received" in e["message"]]
    stopped_at = int(re.search(r"at step (\d+)", said).group(1))
    # Promptly = where the signal found it (a metric every 3 steps, 0.01 s a step), not at the end
    # of the 5000-step epoch or a checkpoint: counted in steps, which a loaded box cannot stretch.
    assert seen <= stopped_at < seen + 100, (seen, said)


def test_onnx_export_at_the_end_and_a_failed_export_does_not_fail_the_run(tmp_path):
    paths = engine.make_run(tmp_path / "runs", profile("single", epochs=1) + '\n[export]\nonnx = true\n')
    checked(engine.run(paths, timeout=120))
    onnx_file = paths.root / "model.onnx"
    messages = [e for e in engine.events(paths, "log") if "ONNX" in e["message"]]
    exporter_installed = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript"))
    if exporter_installed:
        # The test extra installs both: the file must be there and valid, not a warning instead.
        import onnx

        assert onnx_file.exists(), [e["message"] for e in messages]
        onnx.checker.check_model(str(onnx_file))
        assert messages and messages[0]["level"] == "info"
    else:  # exporter missing on this box: a warning, no file, and still exit 0
        assert not onnx_file.exists()
        assert messages and messages[0]["level"] == "warning"

    class Unexportable(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("this model cannot be traced")

    ok, message = export_onnx(Unexportable(), (torch.randn(2),), tmp_path / "bad.onnx")
    assert not ok and "ONNX export" in message and not (tmp_path / "bad.onnx").exists()


def test_channels_last_handles_conv3d_and_conv2d_tasks():
    """channels_last on a 3D-CNN (video) must not raise: 5-D weights take channels_last_3d."""
    from torch.utils.data import DataLoader

    from training.engine.data import _batch_to, _to_channels_last
    from training.tasks import TASKS, load_task_module

    for name in ("video-action", "image-classifier"):
        task = load_task_module(name).build({**TASKS[name].options, **TASKS[name].tiny}, 0)
        model = task.model()
        _to_channels_last(model)
        conv_weights = [p for p in model.parameters() if p.dim() in (4, 5)]
        assert conv_weights and all(
            p.is_contiguous(memory_format=torch.channels_last if p.dim() == 4 else torch.channels_last_3d)
            for p in conv_weights)
        batch = _batch_to(next(iter(DataLoader(task.datasets()[0], batch_size=2))), torch.device("cpu"), True)
        loss, _ = task.loss(model, batch)
        loss.backward()
        assert torch.isfinite(loss)
