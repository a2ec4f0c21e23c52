"""Mixed precision in every thread (issue 15, item 1) and bf16 only where the GPU has it (item 4)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from training.engine.amp import AutocastForward, AutocastProbe, bf16_fix, worker_bf16_problem


def _forward_in_fresh_thread(model: nn.Module) -> dict[str, object]:
    """Call `model` in a new thread that enters autocast the way DataParallel's replica threads
    do (`enabled=` only), so the thread's own default dtype applies: bf16 on the CPU."""
    seen: dict[str, object] = {}

    def replica_thread() -> None:
        try:
            with torch.autocast("cpu", enabled=True):
                seen["dtype"] = model(torch.randn(3, 8)).dtype
        except Exception as exc:  # pragma: no cover - reported by the assertion
            seen["error"] = exc

    thread = threading.Thread(target=replica_thread)
    thread.start()
    thread.join()
    return seen


def test_a_fresh_thread_defaults_to_another_dtype_than_the_profiles():
    # The premise of the fix: without the wrapper a replica thread runs in the thread default.
    seen = _forward_in_fresh_thread(nn.Linear(8, 4))
    assert seen.get("dtype") == torch.bfloat16


def test_the_wrapped_forward_runs_in_the_profiles_dtype_in_a_fresh_thread():
    raw = nn.Linear(8, 4)
    probe = AutocastProbe(raw)
    seen = _forward_in_fresh_thread(AutocastForward(raw, "cpu", torch.float16))
    assert "error" not in seen, seen
    assert seen["dtype"] == torch.float16
    assert probe.by_device() == {"cpu": ["float16"]}
    assert probe.done  # the hook is gone after it saw the expected devices


def test_the_probe_records_every_thread_until_it_has_seen_the_expected_devices():
    raw = nn.Linear(8, 4)
    probe = AutocastProbe(raw, expected=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw(torch.randn(2, 8))
    _forward_in_fresh_thread(raw)
    assert not probe.done
    probe.close()
    assert probe.by_device() == {"cpu": ["bfloat16"]}
    raw(torch.randn(2, 8))  # after close the hook no longer runs
    assert probe.by_device() == {"cpu": ["bfloat16"]}


def test_bf16_fix_below_sm80_suggests_fp16():
    text = bf16_fix((7, 5), "NVIDIA GeForce RTX 2080 Ti")
    assert "sm_75" in text and 'train.amp = "fp16"' in text and "2080 Ti" in text
    assert bf16_fix((8, 0)) is None and bf16_fix((10, 0)) is None and bf16_fix(None) is None


def test_the_worker_refuses_bf16_on_a_turing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 2080 Ti")
    problem = worker_bf16_problem(torch.device("cuda", 0))
    assert problem is not None and "fp16" in problem
    assert worker_bf16_problem(torch.device("cpu")) is None


@pytest.mark.parametrize("wanted, visible, batch, ids, note", [
    (2, 8, 64, [0, 1], None),            # 2xb200-rcl on an 8-GPU box: 2, not 8
    (4, 8, 8190, [0, 1, 2, 3], "not divisible by 4 GPUs"),
    (4, 2, 64, [0, 1], "4 GPUs wanted, 2 visible"),
    (2, 1, 64, [], "one GPU"),
    (2, 0, 64, [], "no GPU"),
])
def test_dp_uses_the_profiles_gpus_and_checks_divisibility_by_them(wanted, visible, batch, ids, note):
    from training.engine.rank_setup import plan_dp

    device_ids, notes = plan_dp(wanted, visible, batch)
    assert device_ids == ids
    text = " ".join(message for _, message in notes)
    if note is None:
        assert notes == []
    else:
        assert note in text
    assert "divisible by 8" not in text
