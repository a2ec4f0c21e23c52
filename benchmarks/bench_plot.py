"""Plot scaling through the real widget: tui.widgets.LossPlot (textual-plotext) mounted in a
headless App (App.run_test, plot 100x25), fed a SeriesStore holding 10^3, 10^5 and 10^6
points in two series (loss and one loss component, as a task reports them), timed as
LossPlot.draw_lines() (store.view downsampling + plotext's matrix + Strips), the work of one
redraw. Best of 7 per size, sizes interleaved round by round. Beside it, in the same run,
LossPlot.render(): textual-plotext's way (plotext's ANSI text decoded by Rich, then drawn), which
the widget painted through before issue 17.

Target: a redraw at 10^6 points within 1.5x of one at 10^3.

    python -m benchmarks.bench_plot
"""

from __future__ import annotations

import asyncio
import time

from benchmarks._common import Result, print_results

TARGET_RATIO = 1.5
SIZES = (1_000, 100_000, 1_000_000)


def make_store(n: int):
    from training.rundir.series import SeriesStore

    store = SeriesStore()
    store.add("train", "loss", 0, 2.0, epoch=0)
    store.add("train", "loss/aux", 0, 0.5, epoch=0)
    main, aux = store.get(("train", "loss")), store.get(("train", "loss/aux"))
    for i in range(1, n):
        # Noisy falling curves, so min/max envelopes have something to keep.
        noise = ((i * 2654435761) % 1000) / 1000.0 - 0.5
        main.add(float(i), float(i // 1000), 2.0 / (1.0 + i * 1e-4) + 0.05 * noise, 0.0)
        aux.add(float(i), float(i // 1000), 0.5 / (1.0 + i * 1e-4) + 0.01 * noise, 0.0)
    return store


async def _time_renders(stores: dict[int, object], repeat: int) -> dict[int, float]:
    from textual.app import App, ComposeResult

    from tui.widgets.loss_plot import LossPlot

    class PlotApp(App):
        CSS = "LossPlot { width: 100; height: 25; }"

        def compose(self) -> ComposeResult:
            yield LossPlot(id="plot")

    app = PlotApp()
    best = {n: float("inf") for n in stores}
    ansi = {n: float("inf") for n in stores}
    async with app.run_test(size=(110, 30)) as pilot:
        plot = app.query_one(LossPlot)
        await pilot.pause()
        for store in stores.values():  # warm-up: plotext, numpy, the theme
            plot.store = store
            plot.draw_lines()
            _draw_through_ansi(plot)
        for _ in range(repeat):
            for n, store in stores.items():
                plot.store = store
                t0 = time.perf_counter()
                plot.draw_lines()
                best[n] = min(best[n], time.perf_counter() - t0)
                t0 = time.perf_counter()
                _draw_through_ansi(plot)
                ansi[n] = min(ansi[n], time.perf_counter() - t0)
        size = plot.size
    best["size"] = (size.width, size.height)  # type: ignore[index]
    best["ansi"] = ansi  # type: ignore[index]
    return best


def _draw_through_ansi(plot) -> None:
    """What a redraw was before: render() (plotext's ANSI text, decoded by Rich) drawn to Strips."""
    from textual.visual import Visual, visualize

    Visual.to_strips(plot, visualize(plot, plot.render()), plot.size.width, plot.size.height, plot.visual_style)


def run(quick: bool = False) -> list[Result]:
    sizes = (1_000, 10_000) if quick else SIZES
    repeat = 3 if quick else 7
    stores = {}
    add_us = {}
    for n in sizes:
        t0 = time.perf_counter()
        stores[n] = make_store(n)
        add_us[n] = (time.perf_counter() - t0) / max(1, 2 * (n - 1)) * 1e6
    best = asyncio.run(_time_renders(stores, repeat))
    w, h = best.pop("size")  # type: ignore[misc]
    ansi = best.pop("ansi")  # type: ignore[misc]
    out = []
    for n in sizes:
        out.append(Result(f"LossPlot.draw_lines {w}x{h}, 2 series x {n:.0e} points", best[n] * 1e3, "ms",
                          note=f"{stores[n].stored_points} points stored; add {add_us[n]:.2f} us/point; "
                               f"through ANSI text (before): {ansi[n] * 1e3:.1f} ms"))
    lo, hi = sizes[0], sizes[-1]
    ratio = best[hi] / best[lo]
    out.append(Result(f"redraw ratio {hi:.0e} / {lo:.0e} points (LossPlot)", ratio, "x", f"<= {TARGET_RATIO:g}x",
                      ratio <= TARGET_RATIO))
    return out


if __name__ == "__main__":
    print_results(run())
