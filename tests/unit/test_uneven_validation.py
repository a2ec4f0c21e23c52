"""A val set smaller than the world: the rank without a validation batch still all-reduces the
task's keys (zeros), so the others are not left waiting in the collective (issue 30, item 7:
`run.py --profile cpu --headless --set task.samples=8 --set train.batch_size=2` failed with
`rank 1 failed: KeyError: 'count'`). The two ranks run one after the other here, against a fake
all_reduce that records what each sends; no process group is started."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.distributed as dist

from training.engine.data import make_data
from training.engine.rank_setup import Precision
from training.engine.step_clock import StepClock
from training.engine.trainer import Trainer
from training.tasks import load_task_module

WORLD = 2


class _Beats:
    def beat(self, *args, **kwargs) -> None:
        pass


def _rank(rank: int):
    """(the trainer's view validate() needs, the task) for one rank of a tiny run of 8 samples."""
    task = load_task_module("tiny").build({"samples": 8, "features": 4, "hidden": 8, "classes": 2,
                                           "noise": 0.1}, seed=0)
    train_set, val_set = task.datasets()
    T = SimpleNamespace(seed=0, batch_size=2, grad_accum=1, steps_per_epoch=0, num_workers=0)
    data = make_data(train_set, val_set, T, "ddp", torch.device("cpu"), rank, WORLD)
    model = task.model()
    view = SimpleNamespace(model=model, raw=model, heartbeat=_Beats(), step=1, epoch=1, data=data, task=task,
                           device=torch.device("cpu"), channels_last=False, ddp=True,
                           precision=Precision(None, torch.amp.GradScaler("cpu", enabled=False), "cpu"),
                           clock=StepClock())
    view._zero_val_totals = lambda eval_model: Trainer._zero_val_totals(view, eval_model)
    return view, len(data.val_loader)


def test_a_rank_without_validation_batches_all_reduces_the_same_keys_as_zeros(monkeypatch):
    sent: dict[int, list[list[float]]] = {}
    current = {"rank": 0}
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: sent.setdefault(current["rank"], []).append(t.tolist()))

    metrics = {}
    for rank in range(WORLD):
        current["rank"] = rank
        view, batches = _rank(rank)
        if rank == 1:
            assert batches == 0  # the setup this test is about: one val sample, two ranks
        metrics[rank] = Trainer.validate(view)

    assert sent.keys() == {0, 1}, "a rank skipped the all-reduce its peers wait in"
    assert [len(t) for t in sent[0]] == [len(t) for t in sent[1]]
    assert all(v == 0.0 for v in sent[1][0])
    assert metrics[0].keys() == metrics[1].keys() and "val_loss" in metrics[1]
