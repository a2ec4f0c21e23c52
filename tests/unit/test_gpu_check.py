"""`run.py --gpu-check` on a box without CUDA, and the judges of its checklist on made-up run
directories (issue 15, "The GPU check"). The check itself on real GPUs is tests/gpu/."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.fake_runs import append_events, event, make_run_dir, write_exit
from training.console import gpu_check_judge as judges
from training.console.gpu_check import EXIT_SKIPPED, FAIL, PASS, SKIP, GpuCheck

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0


def _gpu_check(fake: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINDECK_FAKE_NVML": f"tests.fixtures.fake_nvml:{fake}", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--gpu-check", *argv], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("fake", ["no_driver", "no_library", "zero_devices"])
def test_no_gpu_is_one_line_and_exit_77(fake, tmp_path):
    proc = _gpu_check(fake, "--runs-dir", str(tmp_path))
    assert proc.returncode == EXIT_SKIPPED == 77, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check skipped: no NVIDIA driver/GPU found")
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_gpus_seen_by_nvml_but_a_cpu_torch_fails_with_the_install_hint(tmp_path):
    proc = _gpu_check("eight_b200", "--runs-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "NVML sees 8 GPU(s)" in proc.stdout and "CPU build" in proc.stdout
    assert "pip install torch --index-url https://download.pytorch.org/whl/" in proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_gpu_check_prints_the_line_and_exits_0_without_a_gpu():
    env = {**os.environ, "TRAINDECK_FAKE_NVML": "tests.fixtures.fake_nvml:no_driver"}
    proc = subprocess.run(["make", "-s", "gpu-check"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().startswith("gpu-check skipped: no NVIDIA driver/GPU found")


# ---- the judges ------------------------------------------------------------------------------

def _run(tmp_path, state="finished", device="cuda:0", backend="nccl", autocast=(), grad_scaler=False,
         checkpoint=True):
    paths = make_run_dir(tmp_path / "runs", f"20261201-100000-{device.replace(':', '')}-{state}",
                         state=state, created=T0)
    evs = [event(T0 + 1, "status", state="running", device=device, backend=backend, grad_scaler=grad_scaler)]
    evs += [event(T0 + 2, "log", level="info", message="autocast", autocast=a) for a in autocast]
    evs += [event(T0 + 3, "metric", step=40, epoch=2, split="train", values={"loss": 0.5})]
    append_events(paths, evs)
    write_exit(paths, returncode=0 if state == "finished" else 1, state=state, t=T0 + 5,
               message=state, error=[] if state == "finished" else ["RuntimeError: CUDA error: boom"])
    if checkpoint:
        torch.save({"format": 1, "model": {"w": torch.zeros(2)}, "step": 40}, paths.checkpoints / "last.pt")
    return paths


def test_a_finished_cuda_run_with_a_loadable_checkpoint_passes(tmp_path):
    item = judges.judge_training(_run(tmp_path, backend="nccl"), "cuda", "nccl")
    assert item.status == PASS and "step 40" in item.detail


@pytest.mark.parametrize("kwargs, why", [
    ({"state": "failed"}, "CUDA error: boom"),
    ({"device": "cpu"}, "not cuda"),
    ({"checkpoint": False}, "does not exist"),
    ({"backend": "gloo"}, "not nccl"),
])
def test_a_run_that_did_not_train_on_cuda_fails(tmp_path, kwargs, why):
    item = judges.judge_training(_run(tmp_path, **kwargs), "cuda", "nccl")
    assert item.status == FAIL and why in item.detail


def test_autocast_every_replica_in_the_profiles_dtype(tmp_path):
    good = _run(tmp_path, autocast=[{"cuda:0": ["bfloat16"], "cuda:1": ["bfloat16"]}])
    assert judges.judge_autocast(good, "bfloat16", devices=2)[0]
    # DataParallel's bug: a replica thread in the thread default (fp16) instead of the profile's bf16.
    bad = _run(tmp_path / "b", autocast=[{"cuda:0": ["bfloat16"], "cuda:1": ["float16"]}])
    ok, text = judges.judge_autocast(bad, "bfloat16", devices=2)
    assert not ok and "float16" in text
    few = _run(tmp_path / "c", autocast=[{"cuda:0": ["bfloat16"]}])
    assert not judges.judge_autocast(few, "bfloat16", devices=1, ranks=2)[0]  # a DDP rank did not report


def test_grad_scaler_only_with_fp16(tmp_path):
    assert judges.judge_grad_scaler(_run(tmp_path, grad_scaler=True), "fp16")[0]
    assert not judges.judge_grad_scaler(_run(tmp_path / "b", grad_scaler=True), "bf16")[0]
    assert judges.judge_grad_scaler(_run(tmp_path / "c", grad_scaler=False), "bf16")[0]


def _gpu(index, ranks, t=None, **fields):
    base = {"index": index, "util": 90, "mem_used_mib": 1000, "temp_c": 60, "power_w": 300.0, "ranks": ranks,
            "processes": [], "uuid": f"GPU-{'abc'[index]}"}
    return {**base, **fields}


def _sample(t, *gpus):
    return {"t": t, "source": "nvml", "gpus": list(gpus)}


# The ranks trained from T0 + 10 (rank 1's first step at T0 + 11) to T0 + 20; the baseline was idle.
_TRAINING = [event(T0 + 10, "status", state="running", device="cuda:0", world_size=2),
             event(T0 + 10.5, "log", level="info", message="autocast", autocast={"cuda:0": ["bfloat16"]}),
             event(T0 + 11, "log", level="info", message="autocast", autocast={"cuda:1": ["bfloat16"]}, rank=1),
             event(T0 + 15, "metric", step=5, split="train", values={"loss": 1.0}),
             event(T0 + 20, "metric", step=10, split="train", values={"loss": 0.9})]
_BASELINE = {i: {"uuid": f"GPU-{'abc'[i]}", "mem_used_mib": 3, "util": 0, "processes": {}} for i in range(3)}
_BEATS = {0: {"devices": [{"uuid": "GPU-a"}]}, 1: {"devices": [{"uuid": "GPU-b"}]}}


def test_telemetry_each_ranks_gpu_gained_memory_and_load_while_it_trained():
    real = [_sample(T0 + 16, _gpu(0, [0]), _gpu(1, [1]), _gpu(2, [], util=0, mem_used_mib=3))]
    item = judges.judge_telemetry(real, 2, _BEATS, _TRAINING, _BASELINE)
    assert item.status == PASS and "rank 1 GPU [1] +997 MiB 90%" in item.detail, item.detail
    assert item.evidence["ranks"][0]["samples_in_window"] == 1
    fake = [{**real[0], "source": "fake-nvml"}]
    assert "not the real NVML" in judges.judge_telemetry(fake, 2, _BEATS, _TRAINING, _BASELINE).detail
    no_power = [_sample(T0 + 16, _gpu(0, [0], power_w=None), _gpu(1, [1], power_w=None))]
    assert "power_w" in judges.judge_telemetry(no_power, 2, _BEATS, _TRAINING, _BASELINE).detail
    assert "device UUID" in judges.judge_telemetry(real, 2, {0: _BEATS[0], 1: {}}, _TRAINING, _BASELINE).detail
    # torch spells the UUID without "GPU-": still the rank's GPU.
    assert judges.judge_telemetry(real, 2, {0: {"devices": [{"uuid": "A"}]}, 1: _BEATS[1]}, _TRAINING,
                                  _BASELINE).status == PASS
    assert judges.judge_telemetry([{"source": "cpu", "workers": []}], 2, _BEATS, _TRAINING, _BASELINE).status == FAIL


def test_telemetry_idle_samples_after_the_run_do_not_count():
    """The false pass the first judge had: samples after the run (fake NVML-like idle GPUs still
    showing the fields, and the rank labels) filled what it required."""
    after = [_sample(T0 + 30, _gpu(0, [0]), _gpu(1, [1]))]  # outside the window
    item = judges.judge_telemetry(after, 2, _BEATS, _TRAINING, _BASELINE)
    assert item.status == FAIL and "no NVML sample of its GPU" in item.detail
    idle = [_sample(T0 + 16, _gpu(0, [0], util=0, mem_used_mib=3), _gpu(1, [1], util=0, mem_used_mib=3))]
    item = judges.judge_telemetry(idle, 2, _BEATS, _TRAINING, _BASELINE)
    assert item.status == FAIL and "gained 0 MiB" in item.detail and "utilisation 0%" in item.detail
    # Before rank 1's own first step (T0 + 11) its GPU's sample is not its training.
    early = [_sample(T0 + 10.7, _gpu(0, [0]), _gpu(1, [1]))]
    assert "rank 1: no NVML sample" in judges.judge_telemetry(early, 2, _BEATS, _TRAINING, _BASELINE).detail


def test_telemetry_labels_agreeing_is_not_the_ranks_memory_on_that_gpu():
    """Rank 1's heartbeat says GPU b, the labels say rank 1 is on GPU c, which is busy; GPU b
    (rank 1's own) is idle: the labels agree with nothing the rank did."""
    crossed = [_sample(T0 + 16, _gpu(0, [0]), _gpu(1, [], util=0, mem_used_mib=3), _gpu(2, [1]))]
    item = judges.judge_telemetry(crossed, 2, _BEATS, _TRAINING, _BASELINE)
    assert item.status == FAIL and "rank 1: GPU [1] gained 0 MiB" in item.detail


def test_telemetry_finds_a_mig_rank_by_its_gpus_bus_id():
    beats = {0: {"devices": [{"uuid": "MIG-0d9f", "pci_bus_id": "0000:3B:00.0"}]}}
    samples = [_sample(T0 + 16, _gpu(0, [0], pci_bus_id="0000:3b:00.0"))]
    base = {0: {**_BASELINE[0], "pci_bus_id": "0000:3b:00.0"}}
    assert judges.judge_telemetry(samples, 1, beats, _TRAINING, base).status == PASS


def _snap(used, procs=()):
    return {"uuid": "GPU-a", "mem_used_mib": used, "util": 0, "processes": dict(procs)}


def test_memory_by_pid_where_nvml_listed_the_runs_pids():
    item = judges.judge_memory({0: _snap(500)}, {0: _snap(520)}, {4242}, {4242})
    assert item.status == PASS and item.evidence["method"] == "pid" and item.detail.startswith("[pid]")
    held = judges.judge_memory({0: _snap(500)}, {0: _snap(1300, [(4242, 800)])}, {4242}, {4242})
    assert held.status == FAIL and "pid 4242 on GPU 0 (800 MiB)" in held.detail


def test_memory_in_a_container_cannot_be_hidden_by_another_tenant():
    """The container fake: NVML lists host PIDs, so the runs' PIDs never match and 'no process of
    the runs holds memory' was always true; a leaked 800 MiB context while another tenant freed
    800 MiB passed the +-64 MiB comparison. Now the item says which method judged, and that it
    cannot judge here."""
    tenant_left = judges.judge_memory({0: _snap(9000, [(9001, 800)])}, {0: _snap(9000, [(77123, 800)])}, {4242}, set())
    assert tenant_left.status == FAIL and "77123 (800 MiB)" in tenant_left.detail  # a process not there before
    hidden = judges.judge_memory({0: _snap(9000, [(9001, 800)])}, {0: _snap(9000)}, {4242}, set())
    assert hidden.status == FAIL and hidden.detail.startswith("cannot judge") and "9001 left" in hidden.detail
    assert hidden.evidence["method"] == "cannot judge"
    freed = judges.judge_memory({0: _snap(9000)}, {0: _snap(8000)}, {4242}, set())
    assert freed.status == FAIL and "1000 MiB freed" in freed.detail
    clean = judges.judge_memory({0: _snap(500)}, {0: _snap(520)}, {4242}, set())
    assert clean.status == PASS and clean.evidence["method"] == "used-memory"
    grown = judges.judge_memory({0: _snap(500), 1: _snap(3)}, {0: _snap(500), 1: _snap(900)}, {4242}, set())
    assert grown.status == FAIL and "GPU 1 +897 MiB" in grown.detail


def test_cuda_judges_torchs_own_device_count_and_arch_list():
    """The first cuda item passed after its gate whatever torch saw: a torch that sees 1 of 8
    B200s (monkeypatched torch facts beside the eight_b200 fake) or has no sm_100 kernels."""
    caps = [(f"GPU {i} (NVIDIA B200)", (10, 0)) for i in range(8)]
    good = judges.judge_cuda(nvml_count=8, torch_count=8, arch_list=["sm_90", "sm_100"], gpus=caps, versions={})
    assert good.status == PASS and good.evidence["torch_device_count"] == 8
    few = judges.judge_cuda(nvml_count=8, torch_count=1, arch_list=["sm_100"], gpus=caps, versions={})
    assert few.status == FAIL and "device_count() is 1" in few.detail
    old = judges.judge_cuda(nvml_count=8, torch_count=8, arch_list=["sm_80", "sm_90"], gpus=caps, versions={"torch": "2.5"})
    assert old.status == FAIL and "sm_100" in old.detail


def test_the_check_counts_torchs_devices_against_the_visible_gpus(tmp_path, monkeypatch):
    from tests.fixtures.fake_nvml import eight_b200
    from training.monitor.gpu import GpuBackend

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_90", "sm_100"])
    check = GpuCheck(tmp_path, out=io.StringIO(), backend=GpuBackend(nvml=eight_b200()), environ={})
    check._open_check_dir()
    check._describe_box()
    [cuda] = check.items
    assert cuda.status == FAIL and "device_count() is 1, NVML gives this process 8" in cuda.detail


def test_runs_are_sized_from_the_gpus_this_process_may_use(tmp_path):
    """four_2080ti fake with the user's CUDA_VISIBLE_DEVICES=2: one GPU, not four; mig_a100 with two
    MIG instances named: two; an empty CUDA_VISIBLE_DEVICES: none, and the gate says so."""
    from tests.fixtures.fake_nvml import four_2080ti, mig_a100
    from training.monitor.gpu import GpuBackend

    four = GpuBackend(nvml=four_2080ti())
    assert GpuCheck(tmp_path, backend=four, environ={"CUDA_VISIBLE_DEVICES": "2"}).visible().count == 1
    assert GpuCheck(tmp_path, backend=four, environ={}).visible().count == 4
    mig = GpuBackend(nvml=mig_a100())
    assert GpuCheck(tmp_path, backend=mig, environ={"CUDA_VISIBLE_DEVICES": "MIG-aa,MIG-bb"}).visible().count == 2
    out = io.StringIO()
    code = GpuCheck(tmp_path, out=out, backend=four, environ={"CUDA_VISIBLE_DEVICES": ""}).gate()
    assert code == 1 and "may use none of them" in out.getvalue()


def _dp_run(tmp_path, autocast, dp_ids):
    paths = make_run_dir(tmp_path / "runs", f"20261201-100000-dp-{len(autocast)}", state="finished", created=T0)
    append_events(paths, [event(T0 + 1, "status", state="running", device="cuda:0", dp_device_ids=dp_ids,
                                grad_scaler=False),
                          event(T0 + 2, "log", level="info", message="autocast", autocast=autocast),
                          event(T0 + 3, "metric", step=40, split="train", values={"loss": 0.5})])
    write_exit(paths, state="finished", t=T0 + 5)
    torch.save({"format": 1, "model": {"w": torch.zeros(2)}, "step": 40}, paths.checkpoints / "last.pt")
    return paths


def test_dp_fallback_to_one_device_fails(tmp_path):
    """The first dp item checked only that the device was cuda: DataParallel fallen back to one
    device (plan_dp with too few visible GPUs) trained, checkpointed and passed."""
    fallback = judges.judge_dp(_dp_run(tmp_path, {"cuda:0": ["bfloat16"]}, None), replicas=4)
    assert fallback.status == FAIL and "1 replica(s)" in fallback.detail and "fell back" in fallback.detail
    split = {f"cuda:{i}": ["bfloat16"] for i in range(4)}
    assert judges.judge_dp(_dp_run(tmp_path / "b", split, [0, 1, 2, 3]), replicas=4).status == PASS


def test_preflight_judges_the_profile_written_for_this_box(tmp_path):
    """The first preflight item passed when every profile's preflight ran, even where the box's own
    failed: here the four_2080ti fake with a CPU torch -- the check's profile for these 4 GPUs and
    the shipped 4x2080ti fail, so the item fails naming them."""
    from tests.fixtures.fake_nvml import four_2080ti
    from training.monitor.gpu import GpuBackend

    check = GpuCheck(tmp_path, backend=GpuBackend(nvml=four_2080ti()), environ={})
    item = check.preflight_item(tmp_path, n=4, amp="fp16")
    assert item.evidence["box_profiles"] == ["gpucheck-box", "4x2080ti"]
    if torch.version.cuda is None:
        assert item.status == FAIL and "gpucheck-box: torch" in item.detail and "4x2080ti" in item.detail


def test_preflight_passes_when_the_box_profiles_pass(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import training.console.preflight as preflight
    from tests.fixtures.fake_nvml import four_2080ti
    from training.monitor.gpu import GpuBackend

    def fake_preflight(profile, runs_dir, backend=None):
        ok = profile.name in ("gpucheck-box", "4x2080ti", "cpu")
        return SimpleNamespace(ok=ok, lines=[], checks=[SimpleNamespace(name="gpus", ok=ok)])

    monkeypatch.setattr(preflight, "run_preflight", fake_preflight)
    item = GpuCheck(tmp_path, backend=GpuBackend(nvml=four_2080ti()), environ={}).preflight_item(tmp_path, 4, "fp16")
    assert item.status == PASS and "8xb200-gnn: gpus" in item.detail  # listed, not judged


# ---- the new runs' judges ----------------------------------------------------------------------

def test_stop_must_have_stopped_with_nothing_left():
    assert judges.judge_stop({"state": "stopped", "seconds": 4.0}, 720, []).status == PASS
    assert "not stopped" in judges.judge_stop({"state": "finished"}, 720, []).detail
    assert "still alive" in judges.judge_stop({"state": "stopped"}, 720, [4242]).detail


def _resumed(tmp_path, starts=(0, 60), state="finished"):
    paths = make_run_dir(tmp_path / "runs", "20261201-100000-ddp", state=state, created=T0)
    append_events(paths, [event(T0 + i, "status", state="running", device="cuda:0", start_step=s, world_size=2)
                          for i, s in enumerate(starts)])
    write_exit(paths, state=state, t=T0 + 9)
    return paths


def _stopped_ckpt(step=60, scale=65536.0, cuda_rng=True, ranks=2):
    rng = [{"torch": torch.zeros(2), **({"cuda": [torch.zeros(2)]} if cuda_rng else {})} for _ in range(ranks)]
    return {"step": step, "optimizer": {"state": {0: {}}}, "scaler": {"scale": scale}, "rng": rng}


def test_resume_onto_the_gpu_from_the_stopped_checkpoint(tmp_path):
    assert judges.judge_resume(_resumed(tmp_path), _stopped_ckpt(), "cuda", 2, fp16=True).status == PASS
    fresh = judges.judge_resume(_resumed(tmp_path / "b", starts=(0, 0)), _stopped_ckpt(), "cuda", 2, fp16=True)
    assert fresh.status == FAIL and "started at step 0" in fresh.detail
    no_cuda_rng = judges.judge_resume(_resumed(tmp_path / "c"), _stopped_ckpt(cuda_rng=False), "cuda", 2, fp16=True)
    assert "no CUDA RNG state" in no_cuda_rng.detail
    no_scaler = judges.judge_resume(_resumed(tmp_path / "d"), _stopped_ckpt(scale=None), "cuda", 2, fp16=True)
    assert "no GradScaler state" in no_scaler.detail
    once = judges.judge_resume(_resumed(tmp_path / "e", starts=(0,)), _stopped_ckpt(), "cuda", 2, fp16=True)
    assert "not resumed" in once.detail


def test_fp16_scaler_needs_fp16_forwards_and_a_scale(tmp_path):
    paths = _run(tmp_path, grad_scaler=True, autocast=[{"cuda:0": ["float16"]}])
    torch.save({"format": 1, "model": {"w": torch.zeros(2)}, "step": 40, "scaler": {"scale": 32768.0}},
               paths.checkpoints / "last.pt")
    assert judges.judge_fp16_scaler(paths).status == PASS
    off = _run(tmp_path / "b", grad_scaler=False, autocast=[{"cuda:0": ["float16"]}])
    assert judges.judge_fp16_scaler(off).status == FAIL


def test_grad_accum_ranks_must_end_with_the_same_weights(tmp_path):
    paths = _run(tmp_path)
    weights = paths.root / "weights"
    weights.mkdir()
    for r in range(2):
        torch.save({"w": torch.ones(3)}, weights / f"rank-{r}.pt")
    assert judges.judge_grad_accum(paths, weights, 2, 2).status == PASS
    torch.save({"w": torch.ones(3) * 2}, weights / "rank-1.pt")
    item = judges.judge_grad_accum(paths, weights, 2, 2)
    assert item.status == FAIL and "different weights (w)" in item.detail


def test_onnx_export_on_cuda(tmp_path):
    paths = _run(tmp_path)
    append_events(paths, [event(T0 + 4, "log", level="info", message="exported ONNX (opset 17) to model.onnx: 9 bytes")])
    (paths.root / "model.onnx").write_bytes(b"onnxbytes")
    assert judges.judge_onnx(paths).status == PASS
    missing = _run(tmp_path / "b")
    append_events(missing, [event(T0 + 4, "log", level="warning", message="ONNX export skipped: onnx not installed")])
    assert judges.judge_onnx(missing).status == SKIP
    failed = _run(tmp_path / "c")
    append_events(failed, [event(T0 + 4, "log", level="warning", message="ONNX export failed (X: y)")])
    assert judges.judge_onnx(failed).status == FAIL


def test_a_raising_rank_ends_the_run_in_seconds_and_is_named(tmp_path):
    from traindeck.heartbeat import heartbeat_path
    from training.rundir import write_json_atomic

    paths = _run(tmp_path, state="failed")
    (paths.root / "heartbeats").mkdir(exist_ok=True)
    write_exit(paths, returncode=1, state="failed", t=T0 + 8, failed_rank=1)
    beat = {"rank": 1, "pid": 1, "step": 3, "epoch": 1, "t": T0 + 5, "state": "failed"}
    write_json_atomic(heartbeat_path(paths.root, 1), beat)
    item = judges.judge_rank_failure(paths, 1, 60, "nccl")
    assert item.status == PASS and "3.0 s later naming rank 1" in item.detail
    assert judges.judge_rank_failure(paths, 0, 60, "nccl").status == FAIL  # exit.json names rank 1, not 0
    write_exit(paths, returncode=1, state="failed", t=T0 + 600, failed_rank=1)  # NCCL's timeout
    assert "bound 60 s" in judges.judge_rank_failure(paths, 1, 60, "nccl").detail


def test_the_raise_hook_raises_on_its_rank_only(monkeypatch):
    from torch import nn

    from training.engine.hooks import Hooks

    monkeypatch.setenv("TRAINDECK_TEST_RAISE_AT", "1:3")
    monkeypatch.setenv("RANK", "0")
    Hooks.from_environ().after_step(3, nn.Linear(1, 1))
    monkeypatch.setenv("RANK", "1")
    hooks = Hooks.from_environ()
    hooks.after_step(2, nn.Linear(1, 1))
    with pytest.raises(RuntimeError, match="rank 1 raises after step 3"):
        hooks.after_step(3, nn.Linear(1, 1))


async def test_the_run_screen_renderer_reports_real_and_simulated_panels(recorded_runs_dir, tmp_path):
    import json

    from training.rundir import RunPaths
    from tui.screenshot import _render

    paths = RunPaths(recorded_runs_dir / "20261124-090000-8xb200-gnn")
    result = await _render(paths, tmp_path / "shot.svg", (120, 40))
    assert result["panels"][:2] == ["GPU 0 · B200", "GPU 1 · B200"] and not result["simulated"]
    assert (tmp_path / "shot.svg").read_text().startswith("<svg")
    lines = [json.loads(line) for line in paths.telemetry.read_text().splitlines()]
    paths.telemetry.write_text("".join(json.dumps({**line, "source": "fake-nvml"}) + "\n" for line in lines))
    assert (await _render(paths, None, (120, 40)))["simulated"]
