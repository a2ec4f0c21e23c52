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
    assert status == {"cuda": "PASS", "single": "PASS", "ddp-nccl": "PASS", "ddp-gloo": "PASS", "dp": "SKIP",
                      "autocast": "PASS", "telemetry": "FAIL", "memory": "PASS", "screen": "FAIL",
                      "preflight": "PASS"}, out.getvalue()
    assert code == 1 and read_run_json(check_dir)["state"] == "failed"
    assert report["amp"] == "bf16" and report["gpus"][0]["compute_capability"] == [10, 0]
    # Its runs live inside its run directory; the stopped one was stopped, not finished.
    inner = {p.id.split("-", 2)[2]: p for p in list_run_dirs(check_dir.root / "runs")}
    assert sorted(inner) == ["gpucheck-ddp", "gpucheck-gloo", "gpucheck-single", "gpucheck-stop"]
    assert json.loads(inner["gpucheck-stop"].exit_json.read_text())["state"] == "stopped"
    # The worker's forward hook recorded bf16 in both gloo ranks.
    assert judge_autocast(inner["gpucheck-gloo"], "bfloat16", devices=1, ranks=2, device_type="cpu")[0]
    text = out.getvalue()
    assert "gpu-check FAILED" in text and "[FAIL] telemetry: no GPU sample" in text
