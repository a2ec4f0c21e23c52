"""run.py --scaling on a CPU box: the cpu profile at 1 and 2 ranks, a few steps each, the table printed
and saved beside the runs (two real DDP runs: ~8 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.locations import ROOT

pytestmark = pytest.mark.slow


def test_scaling_prints_the_table_for_1_and_2_ranks(tmp_path):
    runs_dir = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINDECK_")}
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--scaling", "cpu",
                             "--set", "train.steps_per_epoch=20", "--set", "train.log_every=5"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "speed-up" in line and "efficiency" in line)
    rows = [line.split() for line in lines[head + 1:head + 3]]
    assert [r[0] for r in rows] == ["1", "2"]
    assert rows[0][2:4] == ["1.00x", "100%"] and rows[1][2].endswith("x") and rows[1][3].endswith("%")
    assert "input wait" in lines[head] and "all-reduce wait" in lines[head]
    assert any("of 2x" in line for line in lines)  # the small plot
    saved = list(runs_dir.glob("scaling-*-cpu.json"))
    assert len(saved) == 1
    data = json.loads(saved[0].read_text())
    assert [s["ranks"] for s in data["sizes"]] == [1, 2] and all(s["state"] == "finished" for s in data["sizes"])
    assert all((runs_dir / s["run_id"] / "exit.json").exists() for s in data["sizes"])
