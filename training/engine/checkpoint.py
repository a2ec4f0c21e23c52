"""Checkpoints: one dict with fixed keys, written atomically, read back by the same keys.

    {"format": "traindeck/1",
     "model": unwrapped state dict (no "module." prefix), "optimizer": ..., "scaler": ... | None,
     "scheduler": ..., "epoch": 3, "epoch_step": 40, "epoch_complete": False, "step": 940,
     "rng": [per-rank RNG states], "profile_digest": "...", "task": "tiny", "world_size": 2,
     "monitor": {"name": "val_loss", "mode": "min", "value": 1.87 | None}, "best": 1.80 | None}

`epoch` is the 1-based epoch the checkpoint was taken in; `epoch_step` how many optimizer steps of
it were done (a save mid-epoch resumes mid-epoch). Everything is plain tensors, numbers, strings,
lists and dicts, so `torch.load(..., weights_only=True)` reads it: no pickled classes, no code
runs when a checkpoint is loaded.

Writes are atomic: the bytes go to a temp file in the same directory, are fsynced, renamed over
the target with os.replace, and the directory is fsynced. A kill -9 at any moment leaves either
the old file or the new one. A failed write (disk full) removes the temp file, leaves the old
file alone and raises CheckpointWriteError.
"""

from __future__ import annotations

import io
import os
import random
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

FORMAT = "traindeck/1"
EPOCH_FILE = re.compile(r"^epoch-(\d{4,})\.pt$")


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the previous file at that path is intact."""


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be read or does not fit the model."""


# ---- RNG states as plain data --------------------------------------------------------------

def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors/lists/numbers (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    try:
        import numpy as np
    except ImportError:  # numpy is optional for the built-in tasks
        np = None
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"name": str(name), "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(int(x) for x in internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        for i, s in enumerate(cuda_states):
            torch.cuda.set_rng_state(s.cpu().to(torch.uint8), i)
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype("uint32"), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))


# ---- state dicts -------------------------------------------------------------------------

def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DataParallel / DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def strip_module_prefix(state_dict: dict[str, Any]) -> OrderedDict:
    """Accept state dicts saved from a wrapped model ("module.x") or not ("x")."""
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        return OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def model_state(model: torch.nn.Module) -> OrderedDict:
    """Unwrapped state dict with tensors on the CPU (so a GPU checkpoint loads anywhere)."""
    return OrderedDict((k, v.detach().cpu()) for k, v in unwrap(model).state_dict().items())


def make_checkpoint(*, model: torch.nn.Module, optimizer=None, scaler=None, scheduler=None, epoch: int,
                    epoch_step: int, epoch_complete: bool, step: int, rng: list[dict] | None,
                    profile_digest: str, task: str = "", world_size: int = 1,
                    monitor: tuple[str, str] | None = None, monitor_value: float | None = None,
                    best: float | None = None) -> dict[str, Any]:
    name, mode = monitor or ("", "")
    return {
        "format": FORMAT,
        "model": model_state(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "epoch_step": int(epoch_step),
        "epoch_complete": bool(epoch_complete),
        "step": int(step),
        "rng": rng or [],
        "profile_digest": profile_digest,
        "task": task,
        "world_size": int(world_size),
        "monitor": {"name": name, "mode": mode,
                    "value": None if monitor_value is None else float(monitor_value)},
        "best": None if best is None else float(best),
    }


# ---- writing -----------------------------------------------------------------------------

def serialize(checkpoint: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes) -> int:
    """Write bytes so `path` holds either its old content or all of `data`. Returns bytes written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointWriteError(exc.errno, f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
        raise
    _fsync_dir(path.parent)
    return len(data)


def save_checkpoint(checkpoint: dict[str, Any], path: str | os.PathLike) -> int:
    return write_atomic(path, serialize(checkpoint))


def remove_stale_temp_files(directory: str | os.PathLike) -> None:
    """Temp files left by a process killed mid-write (never a complete checkpoint)."""
    for tmp in Path(directory).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


# ---- loading -----------------------------------------------------------------------------

def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint in our format or a bare state dict; always returns our dict's keys.

    A bare state dict comes back as {"model": ..., "format": None} with no training state.
    """
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointLoadError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise CheckpointLoadError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointLoadError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    if isinstance(obj.get("model"), dict):
        ckpt = dict(obj)
        ckpt["model"] = strip_module_prefix(obj["model"])
        return ckpt
    for key in ("state_dict", "model_state_dict"):  # common layouts of other people's checkpoints
        if isinstance(obj.get(key), dict):
            return {"format": None, "model": strip_module_prefix(obj[key])}
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"format": None, "model": strip_module_prefix(obj)}
    raise CheckpointLoadError(f"checkpoint {path} has no model weights (keys: {', '.join(map(str, obj))[:200]})")


def load_model_weights(model: torch.nn.Module, state_dict: dict[str, Any]) -> None:
    try:
        unwrap(model).load_state_dict(strip_module_prefix(state_dict))
    except RuntimeError as exc:
        raise CheckpointLoadError(f"the checkpoint does not fit this model: {exc}") from exc


# ---- which files, when ---------------------------------------------------------------------

def improved(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or value != value:  # NaN never improves
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


class CheckpointFiles:
    """The names under RUN_DIR/checkpoints and the keep-last-K rule for epoch-NNNN.pt."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 0):
        self.dir = Path(directory)
        self.keep_last = keep_last
        self.last = self.dir / "last.pt"
        self.best = self.dir / "best.pt"

    def epoch_file(self, epoch: int) -> Path:
        return self.dir / f"epoch-{epoch:04d}.pt"

    def epoch_files(self) -> list[Path]:
        found = []
        for p in self.dir.glob("epoch-*.pt"):
            m = EPOCH_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def prune(self) -> list[Path]:
        """Delete epoch files beyond the newest keep_last; returns what was removed."""
        files = self.epoch_files()
        doomed = files[: max(0, len(files) - self.keep_last)]
        for p in doomed:
            try:
                p.unlink()
            except OSError:
                pass
        return doomed

    def write(self, data: bytes, targets: list[Path]) -> list[tuple[Path, int, float]]:
        """Write one serialized checkpoint to several files: (path, bytes, seconds) each."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        out = []
        for target in targets:
            t0 = time.monotonic()
            n = write_atomic(target, data)
            out.append((target, n, time.monotonic() - t0))
        return out
