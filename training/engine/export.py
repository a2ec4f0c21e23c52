"""ONNX export of a trained model, best effort.

`export_onnx` never raises for the expected failures (exporter or its dependencies missing, an
operator the exporter cannot handle): it returns (False, reason) so the worker can log a
warning and still finish the run with exit code 0. The training result is the checkpoint; the
ONNX file is a convenience.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import time
from pathlib import Path

import torch


def missing_dependencies() -> list[str]:
    return [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]


def export_onnx(model: torch.nn.Module, example_input: tuple[torch.Tensor, ...], path: str | os.PathLike,
                opset: int = 17) -> tuple[bool, str]:
    """Export `model` (unwrapped, any device) to `path`. Returns (ok, message)."""
    missing = missing_dependencies()
    if missing:
        return False, (f"ONNX export skipped: {' and '.join(missing)} not installed "
                       f"(pip install 'traindeck[export]' or pip install {' '.join(missing)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    args = tuple(t.to(device) for t in example_input)
    was_training = model.training
    model.eval()
    t0 = time.monotonic()
    # The exporter is chatty (progress lines, warnings); keep its output out of the rank log
    # unless it fails.
    chatter = io.StringIO()
    try:
        with torch.no_grad(), contextlib.redirect_stdout(chatter):
            torch.onnx.export(model, args, str(tmp), opset_version=opset, input_names=[
                f"input{i}" for i in range(len(args))], output_names=["output"], dynamo=True,
                external_data=False)
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many types; any of them means "no ONNX file"
        with contextlib.suppress(OSError):
            tmp.unlink()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, f"ONNX export failed ({type(exc).__name__}: {first[:300]}); the checkpoints are unaffected"
    finally:
        model.train(was_training)
    size = path.stat().st_size
    return True, f"exported ONNX (opset {opset}) to {path.name}: {size} bytes in {time.monotonic() - t0:.1f} s"
