"""A failing rank aborts its process group instead of destroying it (issue 30, item 6): NCCL's
orderly destroy can wait for peers that sit in an all-reduce, so the run hung for NCCL's timeout
instead of failing in seconds. A clean end still destroys the group. Fakes stand in for
torch.distributed (no group is started)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.distributed as dist
from torch.distributed import distributed_c10d

from tests.support import engine
from training.engine import rank_main as worker_module
from training.engine.rank_main import leave_process_group


@pytest.fixture
def group(monkeypatch):
    calls: list[str] = []
    state = {"backend": "nccl"}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: state["backend"])
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: calls.append("destroy"))
    monkeypatch.setattr(distributed_c10d, "_abort_process_group", lambda *a: calls.append("abort"))
    return SimpleNamespace(calls=calls, state=state)


def test_a_failure_aborts_nccl_and_a_clean_end_destroys(group):
    leave_process_group(clean=False)
    assert group.calls == ["abort"]
    group.calls.clear()
    leave_process_group(clean=True)
    assert group.calls == ["destroy"]


def test_a_failure_on_gloo_leaves_the_group_to_the_exit(group):
    group.state["backend"] = "gloo"
    leave_process_group(clean=False)
    assert group.calls == []


def test_the_worker_leaves_without_destroying_after_an_exception(group, monkeypatch, tmp_path):
    paths = engine.make_run(tmp_path / "runs", '[launch]\nmode = "single"\n[train]\ntask = "tiny"\n')
    monkeypatch.setattr(worker_module, "build_trainer", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    monkeypatch.setattr(worker_module, "report", SimpleNamespace(
        configure=lambda *a, **k: None, message=lambda *a, **k: None, flush=lambda: None))
    assert worker_module.main([str(paths.root)]) == 1
    assert group.calls == ["abort"]
