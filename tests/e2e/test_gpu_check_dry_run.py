"""The GPU check's whole flow on a CPU box (device "cpu", a one-GPU fake NVML): every run starts,
trains, checkpoints and is judged, the report lands in the check's run directory; the items that
need real GPUs fail honestly (issue 15: try the check on CPU before a GPU session)."""

from __future__ import annotations

import io
import json

import pytest

from tests.fixtures.fake_nvml import FakeDevice, FakeNvml
from training.console.gpu_check import REPORT_NAME, GpuCheck, judge_autocast
from training.monitor.gpu import GpuBackend
from training.rundir import list_run_dirs, read_run_json
from tui.screenshot import render_run_screen


@pytest.mark.slow
def test_the_gpu_check_flow_on_cpu(runs_dir):
    fake = FakeNvml([FakeDevice("NVIDIA B200", 183_359, 1000.0, 140.0, 1965, seed=1, has_fan=False,
                                compute_capability=(10, 0))])
    out = io.StringIO()
    check = GpuCheck(runs_dir, out=out, backend=GpuBackend(nvml=fake), render=render_run_screen,
                     run_timeout_s=90, device_type="cpu")
    code = check.run()
    [check_dir] = list_run_dirs(runs_dir)
    report = json.loads((check_dir.root / REPORT_NAME).read_text())
    status = {item["name"]: item["status"] for item in report["items"]}
    # What needs a real GPU skips (cuda, onnx, dp, fp16-scaler, memory: nothing to release) or fails
    # (telemetry and screen: no real NVML; preflight: the profile for this box wants CUDA from a CPU
    # torch); the flows that run on the CPU pass: the stop, the resume, grad_accum's weight
    # agreement over two gloo ranks, a raising rank named in seconds.
    assert status == {"cuda": "SKIP", "single": "PASS", "onnx": "SKIP", "dp": "SKIP", "ddp-nccl": "PASS",
                      "stop": "PASS", "resume": "PASS", "fp16-scaler": "SKIP", "grad-accum": "PASS",
                      "ddp-gloo": "SKIP", "autocast": "PASS", "telemetry": "FAIL", "rank-failure": "PASS",
                      "memory": "SKIP", "screen": "FAIL", "preflight": "FAIL"}, out.getvalue()
    assert code == 1 and read_run_json(check_dir)["state"] == "failed"
    assert report["amp"] == "bf16" and report["gpus"][0]["compute_capability"] == [10, 0]
    # Its runs live inside its run directory; the stopped one was stopped, not finished.
    inner = {p.id.split("-", 2)[2]: p for p in list_run_dirs(check_dir.root / "runs")}
    assert sorted(inner) == ["gpucheck-ddp", "gpucheck-fail", "gpucheck-single"]
    # The ddp run was stopped mid-training, then resumed to the end in its own directory.
    assert report["runs"]["stopped"]["state"] == "stopped"
    assert json.loads(inner["gpucheck-ddp"].exit_json.read_text())["state"] == "finished"
    # The worker's forward hook recorded bf16 in both gloo ranks.
    assert judge_autocast(inner["gpucheck-ddp"], "bfloat16", devices=1, ranks=2, device_type="cpu")[0]
    evidence = {item["name"]: item["evidence"] for item in report["items"]}
    assert evidence["rank-failure"]["failed_rank"] == 1 and evidence["memory"]["method"] == "used-memory"
    assert "preflight" in evidence and evidence["preflight"]["box_profiles"][0] == "gpucheck-box"
    text = out.getvalue()
    assert "gpu-check FAILED" in text and "[FAIL] telemetry: no GPU sample" in text
