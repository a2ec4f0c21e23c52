"""`run.py --gpu-check` on a box without CUDA, and the judges of its checklist on made-up run
directories (issue 15, "The GPU check"). The check itself on real GPUs is tests/gpu/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.fake_runs import append_events, event, make_run_dir, write_exit
from training.console.gpu_check import (
    EXIT_SKIPPED,
    FAIL,
    PASS,
    judge_autocast,
    judge_grad_scaler,
    judge_memory,
    judge_telemetry,
    judge_training,
)

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
    item = judge_training(_run(tmp_path, backend="nccl"), "cuda", "nccl")
    assert item.status == PASS and "step 40" in item.detail


@pytest.mark.parametrize("kwargs, why", [
    ({"state": "failed"}, "CUDA error: boom"),
    ({"device": "cpu"}, "not cuda"),
    ({"checkpoint": False}, "does not exist"),
    ({"backend": "gloo"}, "not nccl"),
])
def test_a_run_that_did_not_train_on_cuda_fails(tmp_path, kwargs, why):
    item = judge_training(_run(tmp_path, **kwargs), "cuda", "nccl")
    assert item.status == FAIL and why in item.detail


def test_autocast_every_replica_in_the_profiles_dtype(tmp_path):
    good = _run(tmp_path, autocast=[{"cuda:0": ["bfloat16"], "cuda:1": ["bfloat16"]}])
    assert judge_autocast(good, "bfloat16", devices=2)[0]
    # DataParallel's bug: a replica thread in the thread default (fp16) instead of the profile's bf16.
    bad = _run(tmp_path / "b", autocast=[{"cuda:0": ["bfloat16"], "cuda:1": ["float16"]}])
    ok, text = judge_autocast(bad, "bfloat16", devices=2)
    assert not ok and "float16" in text
    few = _run(tmp_path / "c", autocast=[{"cuda:0": ["bfloat16"]}])
    assert not judge_autocast(few, "bfloat16", devices=1, ranks=2)[0]  # a DDP rank did not report


def test_grad_scaler_only_with_fp16(tmp_path):
    assert judge_grad_scaler(_run(tmp_path, grad_scaler=True), "fp16")[0]
    assert not judge_grad_scaler(_run(tmp_path / "b", grad_scaler=True), "bf16")[0]
    assert judge_grad_scaler(_run(tmp_path / "c", grad_scaler=False), "bf16")[0]


def _gpu(index, ranks, **fields):
    base = {"index": index, "util": 90, "mem_used_mib": 1000, "temp_c": 60, "power_w": 300.0, "ranks": ranks,
            "processes": [], "uuid": f"GPU-{'abc'[index]}"}
    return {**base, **fields}


def test_telemetry_must_be_real_nvml_with_every_rank_mapped(tmp_path):
    beats = {0: {"devices": [{"uuid": "GPU-a"}]}, 1: {"devices": [{"uuid": "GPU-b"}]}}
    real = [{"source": "nvml", "gpus": [_gpu(0, [0]), _gpu(1, [1]), _gpu(2, [])]}]
    assert judge_telemetry(real, 2, beats).status == PASS
    fake = [{"source": "fake-nvml", "gpus": [_gpu(0, [0]), _gpu(1, [1])]}]
    assert "not the real NVML" in judge_telemetry(fake, 2, beats).detail
    one = [{"source": "nvml", "gpus": [_gpu(0, [0]), _gpu(1, [])]}]
    assert judge_telemetry(one, 2, beats).status == FAIL
    no_power = [{"source": "nvml", "gpus": [_gpu(0, [0], power_w=None), _gpu(1, [1], power_w=None)]}]
    assert "power_w" in judge_telemetry(no_power, 2, beats).detail
    assert "device UUID" in judge_telemetry(real, 2, {0: beats[0], 1: {}}).detail
    # torch spells the UUID without "GPU-": still a match; another GPU's UUID is not.
    assert judge_telemetry(real, 2, {0: {"devices": [{"uuid": "A"}]}, 1: beats[1]}).status == PASS
    crossed = judge_telemetry(real, 2, {0: beats[1], 1: beats[0]})
    assert crossed.status == FAIL and "mapped by PID only" in crossed.detail
    assert judge_telemetry([{"source": "cpu", "workers": []}], 2, beats).status == FAIL


def test_memory_after_stop_by_process_and_by_baseline():
    assert judge_memory({0: 500, 1: 3}, {0: 520, 1: 3}, []).status == PASS
    grown = judge_memory({0: 500, 1: 3}, {0: 500, 1: 900}, [])
    assert grown.status == FAIL and "GPU 1 +897 MiB" in grown.detail
    held = judge_memory({0: 500}, {0: 500}, [(4242, 0, 800)])
    assert held.status == FAIL and "pid 4242 on GPU 0" in held.detail


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
