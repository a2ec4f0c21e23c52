"""Test-only hooks, read from the environment once at setup (never set by traindeck itself), so
the training loop reads no environment variables:

    TRAINDECK_TEST_DUMP_WEIGHTS=DIR   each rank saves its final weights to DIR/rank-<rank>.pt
    TRAINDECK_TEST_STEP_DELAY_S=0.05  sleep this long after every optimizer step
    TRAINDECK_TEST_STEP_DELAY_RANK=1  ... on this rank only (a straggler, for the step anatomy's tests)
    TRAINDECK_TEST_NAN_AT_STEP=40     after optimizer step 40, every rank's weights become NaN (what a
                                      blown-up update does), once per process: a rewind to a
                                      checkpoint before step 40 passes it again healthy (the health
                                      rules' end-to-end tests)
    TRAINDECK_TEST_RAISE_AT=1:3       rank 1 raises a RuntimeError after optimizer step 3 (run.py
                                      --gpu-check: a rank that fails under NCCL must end the run in
                                      seconds and be named)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from training.engine.checkpoint import model_state


@dataclass(frozen=True)
class Hooks:
    step_delay_s: float = 0.0
    dump_weights: Path | None = None
    nan_at_step: int = 0
    raise_at: tuple[int, int] | None = None  # (rank, step)
    rank: int = 0
    delay_rank: int | None = None  # the step delay on this rank only; None: every rank
    _fired: list = field(default_factory=list, compare=False, repr=False)  # the NaN, once

    @classmethod
    def from_environ(cls) -> Hooks:
        dump = os.environ.get("TRAINDECK_TEST_DUMP_WEIGHTS")
        raise_at = os.environ.get("TRAINDECK_TEST_RAISE_AT")
        rank_text, _, step_text = (raise_at or "").partition(":")
        return cls(step_delay_s=float(os.environ.get("TRAINDECK_TEST_STEP_DELAY_S") or 0),
                   dump_weights=Path(dump) if dump else None,
                   nan_at_step=int(os.environ.get("TRAINDECK_TEST_NAN_AT_STEP") or 0),
                   raise_at=(int(rank_text), int(step_text)) if raise_at else None,
                   rank=int(os.environ.get("RANK") or 0),
                   delay_rank=int(os.environ["TRAINDECK_TEST_STEP_DELAY_RANK"])
                   if os.environ.get("TRAINDECK_TEST_STEP_DELAY_RANK") else None)

    def after_step(self, step: int, raw: nn.Module) -> None:
        if self.step_delay_s and self.delay_rank in (None, self.rank):
            time.sleep(self.step_delay_s)
        if self.raise_at == (self.rank, step):
            raise RuntimeError(f"TRAINDECK_TEST_RAISE_AT: rank {self.rank} raises after step {step} on purpose")
        if self.nan_at_step and step == self.nan_at_step and not self._fired:
            self._fired.append(step)
            with torch.no_grad():
                for p in raw.parameters():
                    p.fill_(float("nan"))

    def at_finish(self, raw: nn.Module, rank: int) -> None:
        if self.dump_weights is not None:
            self.dump_weights.mkdir(parents=True, exist_ok=True)
            torch.save(model_state(raw), self.dump_weights / f"rank-{rank}.pt")
