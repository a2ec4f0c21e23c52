"""The GPU check on real NVIDIA GPUs (issue 15): marked `gpu`, skipped without CUDA.

    .venv/bin/python -m pytest -q -m gpu tests/gpu      # or the quick form: make gpu-check
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.monitor.gpu import GpuBackend

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and an NVIDIA GPU"),
]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_dataparallel_replica_threads_run_in_the_profiles_dtype(amp):
    from training.console.gpu_check import replica_probe

    if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no bf16")
    result = replica_probe(amp)
    assert result["ok"], result


def test_nvml_reports_the_compute_capability_torch_sees():
    backend = GpuBackend()
    assert backend.available, backend.error
    caps = {d.index: d.compute_capability for d in backend.devices()}
    assert caps[0] == torch.cuda.get_device_capability(0)


@pytest.mark.timeout(900)
def test_the_whole_gpu_check_passes(tmp_path):
    from training.console.gpu_check import REPORT_NAME, GpuCheck
    from tui.screenshot import render_run_screen

    code = GpuCheck(tmp_path, render=render_run_screen).run()
    [report_path] = list(Path(tmp_path).glob(f"*-gpu-check/{REPORT_NAME}"))
    report = json.loads(report_path.read_text())
    failed = [item for item in report["items"] if item["status"] == "FAIL"]
    assert code == 0 and not failed, failed
