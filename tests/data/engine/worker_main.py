"""Runs training.worker for the engine tests (as a script, so torchrun can start it too).

- ENGINE_TEST_TASK=engine (or training/tasks/tiny.py not existing) serves the task "tiny" from
  tests/fixtures/engine_task.py, whose loss has named components (loss/ce, loss/reg).
- ENGINE_TEST_ENOSPC_ON_SAVE=N makes the N-th checkpoint write (1-based) fail with ENOSPC after
  half its bytes, the way a full disk does.
- ENGINE_TEST_SLOW_SAMPLE_S=0.001 makes every training sample take this long to load: a slow
  DataLoader (the step anatomy's input-bound tests).
"""

import errno
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

if os.environ.get("ENGINE_TEST_TASK") == "engine" or importlib.util.find_spec("training.tasks.tiny") is None:
    from tests.fixtures import engine_task

    sys.modules["training.tasks.tiny"] = engine_task

fail_on = int(os.environ.get("ENGINE_TEST_ENOSPC_ON_SAVE") or 0)
if fail_on:
    import training.engine.checkpoint as checkpoint

    real_write_atomic = checkpoint.write_atomic
    calls = {"n": 0}

    def write_atomic_disk_full(path, data):
        calls["n"] += 1
        if calls["n"] < fail_on:
            return real_write_atomic(path, data)
        real_os_write = checkpoint.os.write

        def short_write(fd, buf):
            # Half the data lands, then the disk is full.
            if len(buf) > len(data) // 2:
                real_os_write(fd, bytes(buf[: len(data) // 2]))
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_os_write(fd, buf)

        checkpoint.os.write = short_write
        try:
            return real_write_atomic(path, data)
        finally:
            checkpoint.os.write = real_os_write

    checkpoint.write_atomic = write_atomic_disk_full

from training.engine import rank_main as worker  # noqa: E402

slow_sample_s = float(os.environ.get("ENGINE_TEST_SLOW_SAMPLE_S") or 0)
if slow_sample_s:
    import time

    from torch.utils.data import Dataset

    class SlowDataset(Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            time.sleep(slow_sample_s)
            return self.inner[i]

    real_make_data = worker.make_data

    def make_slow_data(train_set, *args, **kwargs):
        return real_make_data(SlowDataset(train_set), *args, **kwargs)

    worker.make_data = make_slow_data
from training.engine.fast_exit import exit_without_teardown  # noqa: E402

if __name__ == "__main__":
    exit_without_teardown(worker.main())
