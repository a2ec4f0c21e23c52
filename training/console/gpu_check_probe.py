"""The GPU check's DataParallel replica-thread probe: parallel_apply over two replicas on cuda:0,
run in a child process (`python -m training.console.gpu_check --replica-probe AMP`) so the checker
never holds a CUDA context."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from training import PROJECT_ROOT


def replica_probe(amp: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """DataParallel's replica threads on one GPU: parallel_apply over two replicas on cuda:0, in a
    child process (so this one never holds a CUDA context). Returns {"ok", "detail", ...}."""
    try:
        proc = subprocess.run([sys.executable, "-m", "training.console.gpu_check", "--replica-probe", amp],
                              capture_output=True, text=True, timeout=timeout_s,
                              cwd=str(PROJECT_ROOT))
    except subprocess.TimeoutExpired:
        return {"ok": False, "detail": f"the probe did not finish in {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {"ok": False, "detail": f"the probe failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"}


def _replica_probe_main(amp: str) -> int:
    """In the child: the worker's DP wrapping, replicated twice onto cuda:0 and run by parallel_apply
    (threads, as nn.DataParallel does), under the outer autocast the training loop enters."""
    import torch
    from torch import nn
    from torch.nn.parallel import parallel_apply

    from training.engine.amp import DTYPES, AutocastForward, AutocastProbe

    dtype = DTYPES[amp]
    expected = str(dtype).replace("torch.", "")
    raw = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).cuda()
    # Both "devices" are cuda:0, so the probe (keyed by device and thread) stays for both threads.
    probe = AutocastProbe(raw, expected=2)
    wrapped = AutocastForward(raw, "cuda", dtype)
    replicas = [wrapped, wrapped]  # one module run by two threads at once, as two replicas would be
    inputs = [(torch.randn(8, 32, device="cuda"),), (torch.randn(8, 32, device="cuda"),)]
    with torch.autocast("cuda", dtype=dtype):
        outputs = parallel_apply(replicas, inputs, devices=[0, 0])
    out_dtypes = sorted({str(o.dtype).replace("torch.", "") for o in outputs})
    threads = {key.split(" ", 1)[1]: value for key, value in probe.seen.items()}
    ok = len(threads) >= 2 and set(threads.values()) == {expected} and out_dtypes == [expected]
    print(json.dumps({"ok": ok, "threads": threads, "outputs": out_dtypes,
                      "detail": f"{len(threads)} replica thread(s) ran in {sorted(set(threads.values()))}, "
                                f"outputs {out_dtypes}, expected {expected}"}))
    return 0 if ok else 1
