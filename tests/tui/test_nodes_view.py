"""A `[launch] hosts` run on the run screen: every node's panels, grouped and titled by host, and
the header naming the nodes (issue 21, one run, one view)."""

from __future__ import annotations

import json
import shutil

from tests.support.waiting import await_for
from training.rundir import RunPaths, read_run_json, write_json_atomic
from tui.screens.run_screen import RunScreen
from tui.widgets import GpuPanel, RunHeader

GNN = "20261124-090000-8xb200-gnn"


async def test_the_run_screen_groups_panels_by_host_and_names_the_nodes(recorded_app, recorded_runs_dir):
    head = RunPaths(recorded_runs_dir / GNN)
    write_json_atomic(head.run_json, {**read_run_json(head), "head_host": "gpu-a",
                                      "nodes": [{"host": "gpu-b", "run_dir": "/scratch/runs/x/nodes/gpu-b"}]})
    # The other node's copy: its own 8 GPUs (the recorded samples, ranks 8-15) and its end.
    copy = head.node("gpu-b")
    copy.root.mkdir(parents=True)
    lines = [json.loads(line) for line in head.telemetry.read_text().splitlines() if line.strip()]
    for line in lines:
        for gpu in line.get("gpus") or []:
            gpu["ranks"] = [gpu["index"] + 8]
    copy.telemetry.write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_json_atomic(copy.exit_json, {"state": "finished", "message": "finished"})
    shutil.rmtree(copy.heartbeats, ignore_errors=True)
    async with recorded_app(GNN).run_test(size=(160, 60)) as pilot:
        await await_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen) and pilot.app.screen.loaded)
        screen = pilot.app.screen
        await await_for(pilot, lambda: len(screen.query(GpuPanel)) == 16, what="16 panels")
        titles = [p.device.title for p in screen.query(GpuPanel)]
        assert [t.split(" · ")[0] for t in titles] == ["gpu-a"] * 8 + ["gpu-b"] * 8, titles
        assert titles[8].startswith("gpu-b · GPU 0") and screen.query(GpuPanel)[8].device.ranks == (8,)
        await await_for(pilot, lambda: "gpu-b finished" in screen.query_one(RunHeader).info.nodes)
        assert screen.query_one(RunHeader).info.nodes == "gpu-a head · gpu-b finished"
