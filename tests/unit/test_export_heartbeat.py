"""Rank 0's heartbeat says "exporting" while the ONNX export runs, a state the watchdog allows to
take long (issue 30, item 8: it still said "saving", or "training", and a long export of a big
model looked like a hung step)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from training.engine import trainer as trainer_module
from training.engine.trainer import Trainer
from training.monitor.watchdog import LONG_STATES


class _Beats:
    def __init__(self) -> None:
        self.state = "training"

    def beat(self, step, epoch=0, state=None, force=False) -> None:
        self.state = state or "training"


def test_the_heartbeat_says_exporting_during_the_onnx_export(monkeypatch, tmp_path):
    beats = _Beats()
    seen = []
    monkeypatch.setattr(trainer_module, "_export", lambda *a, **k: (seen.append(beats.state), (True, "exported"))[1])
    monkeypatch.setattr(trainer_module.report, "message", lambda *a, **k: None)
    view = SimpleNamespace(epoch=2, start=SimpleNamespace(epoch=1), T=SimpleNamespace(epochs=2), is_main=True,
                           profile=SimpleNamespace(export=SimpleNamespace(onnx=True, path="model.onnx", opset=17)),
                           task=None, raw=None, paths=SimpleNamespace(root=Path(tmp_path)), step=12,
                           hooks=SimpleNamespace(at_finish=lambda raw, rank: None), env=SimpleNamespace(rank=0),
                           heartbeat=beats, report_timing=lambda: None)
    Trainer.finish(view)
    assert seen == ["exporting"] and "exporting" in LONG_STATES
    assert beats.state == "finished"
