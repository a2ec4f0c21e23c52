"""Render a run's screen off-terminal (Textual's run_test) and say what it shows.

Used by `run.py --gpu-check` (training.console.gpu_check takes it as its `render` callback, since training/
never imports the console): proof that the run screen draws from real telemetry.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from training.rundir import RunPaths

SIZE = (160, 48)
WAIT_S = 20.0


def render_run_screen(paths: RunPaths, svg_path: Path | None = None, size: tuple[int, int] = SIZE) -> dict[str, Any]:
    """{"panels": [each GPU panel's title], "simulated": bool, "svg": path of the screenshot}."""
    return asyncio.run(_render(paths, svg_path, size))


async def _render(paths: RunPaths, svg_path: Path | None, size: tuple[int, int]) -> dict[str, Any]:
    from tui.app import make_app
    from tui.screens.run_screen import RunScreen
    from tui.widgets import GpuPanel
    from tui.widgets.gpu_grid import GpuGrid

    app = make_app(runs_dir=paths.root.parent, attach=paths)
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            screen = pilot.app.screen
            if isinstance(screen, RunScreen) and screen.loaded and screen.telemetry_seen:
                break
            await pilot.pause(0.1)
        else:
            raise TimeoutError(f"the run screen did not load {paths.id} with telemetry in {WAIT_S:.0f} s")
        await pilot.pause(0.3)
        screen = pilot.app.screen
        panels = [p.device.title for p in screen.query(GpuPanel) if p.device is not None]
        simulated = screen.query_one(GpuGrid).simulated
        if svg_path is not None:
            Path(svg_path).write_text(pilot.app.export_screenshot(), encoding="utf-8")
    return {"panels": panels, "simulated": simulated, "svg": str(svg_path) if svg_path else None}
