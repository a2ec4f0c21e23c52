#!/usr/bin/env python3
"""traindeck: a terminal console for multi-GPU PyTorch training.

    python run.py                          # the console: pick a profile, start, watch
    python run.py --profile cpu            # start a profile and watch it
    python run.py --profile cpu --headless # plain progress lines; exit code = the run's
    python run.py --profile 4x2080ti --queue   # a shared box: wait in line for busy GPUs
    python run.py --list | --check --profile 8xb200-gnn | --runs | --attach [RUN] | --stop RUN | --gpus
    python run.py --profile cpu --sweep train.lr=1e-3,3e-4 --sweep train.batch_size=64,128   # a grid
    python run.py --compare SWEEP | RUN RUN ... [--json]   # ranked by the monitored metric
    python run.py --export RUN --format tensorboard|csv DIR
    python run.py --scaling 4x2080ti       # 1, 2, 4 GPUs: speed-up, efficiency, where the time goes

`run.py` and the `traindeck` console script are the same entry point (`main`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

# Run from a checkout without installing: make the project importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training.errors import TraindeckError  # noqa: E402
from training.rundir import RUNS_DIR_ENV, default_runs_dir  # noqa: E402
from training.rundir.control import ACTIONS  # noqa: E402 - the one list of control actions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="traindeck",
        description="Terminal console for multi-GPU PyTorch training: start DP/DDP/single runs from TOML "
        "profiles as managed process groups, watch per-GPU panels, loss plots and checkpoints, detach and "
        "attach over SSH.",
        epilog="Examples: 'run.py' (console), 'run.py --profile cpu --headless', "
        "'run.py --check --profile 8xb200-gnn', 'run.py --attach', 'run.py --stop RUN'.",
    )
    start = p.add_argument_group("start a run")
    start.add_argument("--profile", metavar="NAME|PATH",
                       help="profile name in profiles/ (e.g. cpu, 4x2080ti) or a path to a .toml file")
    start.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a profile value, type-checked like the file (repeatable), e.g. "
                       "--set train.epochs=2 --set launch.mode=single")
    start.add_argument("--headless", action="store_true",
                       help="no UI: print one progress line per interval and exit with the run's exit code "
                       "(automatic when stdout is not a terminal)")
    start.add_argument("--rehearse", action="store_true",
                       help="rehearse the profile on this box first: same task, mode, ranks and checkpoint/"
                       "resume/export steps, scaled down; prints a checklist, exit 0 only if all pass")
    start.add_argument("--resume", metavar="RUN",
                       help="restart a stopped or failed run in its own directory from its last.pt")
    start.add_argument("--scaling", metavar="NAME|PATH",
                       help="run the profile for a fixed number of steps (train.steps_per_epoch, default 60) on 1, "
                       "2, 4 ... N GPUs (ranks on a CPU box), same per-GPU batch, and print speed-up and "
                       "efficiency against linear with the step anatomy at each size; saved in the runs directory")
    start.add_argument("--queue", action="store_true",
                       help="with --profile or --resume on a shared box: when the GPUs are busy, wait in line "
                       "for them (state 'queued', first come first served) instead of refusing; the wait goes "
                       "on without the console, --stop cancels it")

    sweep = p.add_argument_group("sweeps and comparisons")
    sweep.add_argument("--sweep", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                       help="with --profile: one run per value (repeatable: the grid of every flag), each value "
                       "type-checked like --set; the runs go through the box's GPU queue, one after another "
                       "(or --parallel N), started by a small process of the sweep's own, so the console may exit")
    sweep.add_argument("--parallel", type=int, default=1, metavar="N",
                       help="with --sweep: up to N runs of the sweep live at once (each still waits for its GPUs)")
    sweep.add_argument("--compare", nargs="+", metavar="RUN|SWEEP",
                       help="print runs side by side, ranked by the monitored metric (the best marked *): state, "
                       "best value and epoch, final train loss, samples/s, duration, health incidents, and the "
                       "config keys that differ")
    sweep.add_argument("--json", action="store_true", help="with --compare: JSON for scripts")
    sweep.add_argument("--export", metavar="RUN",
                       help="write the run's series (every metric, split and component) to DIR: --format "
                       "tensorboard (event files; needs the tensorboard package) or csv")
    sweep.add_argument("--format", dest="export_format", choices=("tensorboard", "csv"), default=None,
                       help="with --export: tensorboard or csv")
    sweep.add_argument("export_dir", nargs="?", type=Path, default=None, metavar="DIR",
                       help="with --export: the directory to write into")

    info = p.add_argument_group("profiles")
    info.add_argument("--list", action="store_true", help="list profiles with a hardware-match column")
    info.add_argument("--notify-test", nargs="?", const="", metavar="PROFILE",
                      help="run the profile's [notify] command once with a test event (JSON on stdin) and say "
                      "what it did; exit 0 when it exited 0")
    info.add_argument("--check", action="store_true",
                      help="preflight the --profile: GPUs wanted vs found, NCCL, disk, port; print what would run")
    info.add_argument("--gpus", action="store_true",
                      help="who holds which GPU of this box now: traindeck runs by run id and user, other "
                      "processes by pid, user and memory, and the starts waiting for GPUs")
    info.add_argument("--gpu-check", action="store_true",
                      help="prove the CUDA paths on this box's GPUs in a few minutes (single, dp, ddp runs, "
                      "autocast, NVML telemetry, memory after stop, the run screen, --check of every profile); "
                      "exit 77 when NVML finds no GPU")

    runs = p.add_argument_group("runs")
    runs.add_argument("--runs", action="store_true", help="list runs (state, profile, start, step, last loss)")
    runs.add_argument("--attach", nargs="?", const="", metavar="RUN",
                      help="open the run screen on a run (default: the newest live run)")
    runs.add_argument("--stop", metavar="RUN",
                      help="stop a run: SIGTERM, a grace period, then SIGKILL to every process of it; exit 0 "
                      "only when nothing of it is left (otherwise the survivors are named)")
    runs.add_argument("--now", action="store_true", help="with --stop: skip the grace period, SIGKILL at once")
    runs.add_argument("--dump", metavar="RUN", help="record the Python stacks of every rank into the run directory")
    runs.add_argument("--control", nargs=2, metavar=("RUN", "ACTION"),
                      help=f"ask a live run's workers to act at the next step boundary: {', '.join(ACTIONS)}")
    look = p.add_argument_group("over SSH")
    look.add_argument("--refresh", type=_seconds, default=None, metavar="SECONDS",
                      help="redraw the run screen at most every SECONDS (header, GPU panels, plot); "
                      "e.g. --refresh 2 on a slow link")
    look.add_argument("--low-bandwidth", action="store_true",
                      help="for the worst links: monochrome, no sparklines, the plot every 5 s")
    p.add_argument("--runs-dir", type=Path, default=None, metavar="DIR",
                   help=f"where run directories live (default ./runs, or ${RUNS_DIR_ENV})")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("between 0.1 and 3600 seconds")
    return value


def _run_screen_renderer():
    """The console's off-terminal renderer for the GPU check. Without Textual the check still runs
    and its screen item fails with the reason (the console could not show the run either)."""
    try:
        from tui.screenshot import render_run_screen
    except ImportError as exc:
        missing = exc

        def render_run_screen(paths, svg_path):
            raise ImportError(f"the console cannot load ({missing}); install traindeck's dependencies "
                              f"(textual, textual-plotext, plotext)")
    return render_run_screen


def _print_phase(paths, out, phase: int) -> int:
    """A rehearsal phase, followed like --headless. Ctrl-C stops it (nobody wants half a rehearsal
    left running); phase 2 continues the same event stream, so only what is new is printed."""
    from tui.headless import follow

    return follow(paths, out, stop_on_interrupt=True, interval_s=1.0, history=phase == 1)


def _interactive() -> bool:
    return sys.stdout.isatty() and sys.stdin.isatty()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Ctrl-C means "stop the run" (headless) or "detach" (attach), even when the shell that
    # started us ignored SIGINT for background jobs (`run.py ... &` in a script): Python does not
    # install its handler for a signal it inherited as ignored.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    runs_dir = args.runs_dir or default_runs_dir()
    try:
        return _dispatch(args, argv, runs_dir)
    except TraindeckError as exc:
        print(f"traindeck: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `run.py --runs | head`: the reader went away. A run keeps going in its own session;
        # silence the interpreter's final flush of the dead pipe instead of printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _notify_test(profile, runs_dir: Path) -> int:
    """run.py --notify-test PROFILE: the [notify] command once, as a health firing would run it."""
    from training.monitor.notify import argv_for, notification, notify_test, test_event

    source = profile.source or profile.name
    if not profile.notify.command:
        raise TraindeckError(f"{source}: the profile has no [notify] command to test. Add one, e.g.\n"
                             f"[notify]\ncommand = [\"notify-send\", \"traindeck {{run_id}}\", \"{{rule}}: {{message}}\"]")
    run_id, run_dir = "notify-test", str(runs_dir / "notify-test")
    shown = argv_for(list(profile.notify.command), notification(test_event(run_id), run_id, run_dir))
    print(f"running {shown} (timeout {profile.notify.timeout_s:g} s), the event as JSON on stdin")
    outcome = notify_test(profile.notify, run_id, run_dir)
    if outcome.output:
        print(outcome.output)
    if outcome.ok:
        print("notify command exited 0")
        return 0
    print(f"notify command {outcome.error}. Fix [notify] command in {source}.", file=sys.stderr)
    return 1


def _scaling(args: argparse.Namespace, argv: list[str], runs_dir: Path) -> int:
    """run.py --scaling PROFILE: the profile at 1, 2, 4 ... N GPUs, measured (training.console.scaling)."""
    from training.console.scaling import DEFAULT_STEPS, format_scaling, measure_scaling
    from training.profile import load_profile

    profile = load_profile(args.scaling, args.overrides)
    steps = profile.train.steps_per_epoch if any(o.startswith("train.steps_per_epoch=") for o in args.overrides) \
        else DEFAULT_STEPS
    result = measure_scaling(profile, runs_dir, steps=steps, argv=argv,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_scaling(result))
    return 0 if all(s.state == "finished" for s in result.sizes) else 1


def _dispatch(args: argparse.Namespace, argv: list[str], runs_dir: Path) -> int:
    from training.console import preflight
    from training.profile import load_profile

    if args.list:
        print(preflight.format_profile_list())
        return 0
    if args.gpus:
        from training.console.gpu_holders import format_gpu_holders

        print(format_gpu_holders())
        return 0
    if args.gpu_check:
        from training.console.gpu_check import GpuCheck

        return GpuCheck(runs_dir, render=_run_screen_renderer()).run()
    if args.notify_test is not None:
        return _notify_test(load_profile(args.notify_test or args.profile or "cpu", args.overrides), runs_dir)
    if args.check:
        profile = load_profile(args.profile or "cpu", args.overrides)
        report = preflight.run_preflight(profile, runs_dir, holders=True)
        preflight.node_checks(report)  # [launch] hosts: every other host over SSH
        print(report.format())
        from training.rundir.cgroups import detect

        print(f"stop method on this box: {detect().describe()}")
        return 0 if report.ok else 1
    if args.export_dir is not None and not args.export:
        raise TraindeckError(f"'{args.export_dir}': a directory goes with --export RUN --format tensorboard|csv DIR.")
    if args.runs:
        from training.console import runs
        from training.console.sweeps import format_runs_grouped

        summaries = runs.list_runs(runs_dir, warn=lambda line: print(line, file=sys.stderr))
        print(format_runs_grouped(runs_dir, summaries))
        return 0
    if args.compare:
        from training.console.compare import comparison_json, format_comparison, load_comparison, resolve_runs

        comparison = load_comparison(resolve_runs(runs_dir, args.compare))
        print(comparison_json(comparison) if args.json else format_comparison(comparison))
        return 0
    if args.export:
        return _export(args, runs_dir)
    if args.stop and (args.stop.startswith("sweep-") or (Path(args.stop) / "sweep.json").exists()):
        from training.console.sweeps import find_sweep, stop_sweep

        sweep = find_sweep(runs_dir, args.stop)
        if sweep is None:
            raise TraindeckError(f"no sweep matching '{args.stop}' in {runs_dir}. See the sweeps with: run.py --runs")
        text, code = stop_sweep(sweep, progress=lambda line: print(line, file=sys.stderr, flush=True))
        print(text, file=sys.stderr if code else sys.stdout)
        return code
    if args.stop:
        from training.console import runs
        from training.console.stop import format_outcome, stop_and_check

        paths = runs.find_run(runs_dir, args.stop)
        # What the stop waits for goes to stderr: stdout is the outcome alone ("RUN: stopped").
        outcome = stop_and_check(paths, now=args.now, progress=lambda line: print(line, file=sys.stderr, flush=True))
        text, code = format_outcome(paths, outcome)
        print(text, file=sys.stderr if code else sys.stdout)
        return code
    if args.control:
        from training.console import runs
        from training.console.node_reach import control_run

        spec, action = args.control
        if action not in ACTIONS:
            raise TraindeckError(f"unknown control action '{action}'; use one of {', '.join(ACTIONS)}.")
        paths = runs.find_run(runs_dir, spec)
        print(control_run(paths, action))
        return 0
    if args.dump:
        from training.console import runs
        from training.console.node_reach import dump_run

        paths = runs.find_run(runs_dir, args.dump)
        for line in dump_run(paths):
            print(line)
        return 0

    from training.console import runs
    from training.console import stop as stopping

    if args.scaling:
        return _scaling(args, argv, runs_dir)
    if args.sweep or args.parallel != 1:
        return _start_sweep(args, argv, runs_dir)
    headless = args.headless or not _interactive()
    starts = args.resume or (args.attach is None and not args.rehearse and (args.profile or headless))
    if args.queue and not starts:
        raise TraindeckError("--queue goes with --profile NAME or --resume RUN (it makes a start wait for busy "
                             "GPUs), e.g. 'run.py --profile 4x2080ti --queue'; the picker's key for it is w.")
    stopping.reap_orphans(runs_dir, warn=lambda line: print(line, file=sys.stderr))
    if args.rehearse:
        from training.console import rehearse

        profile = load_profile(args.profile or "cpu", args.overrides)
        return rehearse.rehearse(profile, runs_dir, _print_phase, argv=argv, out=sys.stdout)
    if args.attach is not None or args.resume:
        if args.resume:
            paths = runs.find_run(runs_dir, args.resume)
            from training.console.owned_run import check_owned_run

            check_owned_run(paths, "--resume")  # it starts the run's profile.toml: only a run of yours
            _check_resume(paths, runs_dir, args.queue)
            paths = runs.resume_run(paths, queue=args.queue)
        else:
            paths = runs.find_run(runs_dir, args.attach or None, live_only=not args.attach)
        if headless:
            from tui.headless import follow

            return follow(paths)
        from tui.app import make_app

        return make_app(runs_dir=runs_dir, attach=paths, **_look(args)).run() or 0
    if args.profile or headless:
        from training.console.start_checks import check_start

        profile = load_profile(args.profile or "cpu", args.overrides)
        # What --check already knows refuses the start now, not minutes into a launch.
        for warning in check_start(profile, runs_dir, queue=args.queue):
            print(f"traindeck: {warning}", file=sys.stderr)
        if headless:
            from tui.headless import follow

            paths = runs.start_run(profile, runs_dir, argv=argv, queue=args.queue)
            # Ctrl-C stops the run, and cancels it while it is still queued.
            return follow(paths, stop_on_interrupt=True)
        from tui.app import make_app

        return make_app(runs_dir=runs_dir, profile=profile, argv=argv, queue=args.queue, **_look(args)).run() or 0
    from tui.app import make_app

    return make_app(runs_dir=runs_dir, **_look(args)).run() or 0


def _check_resume(paths, runs_dir: Path, queue: bool) -> None:
    """A resume claims GPUs afresh (the run's may be someone else's now): the start table applies
    to it as to a new start, with the profile the run recorded."""
    from training.console.runs import is_live
    from training.console.start_checks import check_start
    from training.profile import ProfileError, parse_profile

    if is_live(paths):
        return  # resume_run refuses it, naming its state
    try:
        profile = parse_profile(paths.profile.read_text(encoding="utf-8"), path=paths.profile)
    except (OSError, ProfileError):
        return  # resume_run says what is wrong with the run directory
    for warning in check_start(profile, runs_dir, queue=queue):
        print(f"traindeck: {warning}", file=sys.stderr)


def _export(args: argparse.Namespace, runs_dir: Path) -> int:
    from training.console import runs
    from training.console.export import export_run

    if args.export_format is None or args.export_dir is None:
        raise TraindeckError("--export RUN needs --format tensorboard|csv and a directory, e.g. "
                             "'run.py --export RUN --format tensorboard exports/'.")
    print(export_run(runs.find_run(runs_dir, args.export), args.export_format, args.export_dir))
    return 0


def _start_sweep(args: argparse.Namespace, argv: list[str], runs_dir: Path) -> int:
    """--profile P --sweep K=V1,V2 ...: every point checked first, then the sweep's runner started."""
    from training.console.start_checks import check_start
    from training.console.sweep_grid import check_points, expand, parse_sweeps
    from training.console.sweeps import start_sweep
    from training.profile import load_profile

    if not args.sweep or not args.profile:
        raise TraindeckError("--sweep goes with --profile NAME (and --parallel with --sweep), e.g. 'run.py --profile "
                             "cpu --sweep train.lr=1e-3,3e-4 --sweep train.batch_size=64,128 --parallel 2'.")
    if args.parallel < 1:
        raise TraindeckError(f"--parallel {args.parallel}: give how many runs of the sweep may be live at once, 1 or more.")
    if args.resume or args.attach is not None or args.rehearse:
        raise TraindeckError("--sweep starts new runs; it does not go with --resume, --attach or --rehearse.")
    profile = load_profile(args.profile, args.overrides)
    grid = parse_sweeps(args.sweep)
    check_points(profile.to_toml(), profile.source or args.profile, expand(grid))
    for warning in check_start(profile, runs_dir, queue=True):
        print(f"traindeck: {warning}", file=sys.stderr)
    sweep = start_sweep(profile, runs_dir, grid, args.overrides, parallel=args.parallel,
                        argv=["--profile", args.profile, *(a for s in args.overrides for a in ("--set", s))])
    points = len(expand(grid))
    how = "one after another" if args.parallel == 1 else f"up to {args.parallel} at once"
    print(f"sweep {sweep.id}: {points} runs of {profile.name} ({' x '.join(k for k, _ in grid)}), {how}, through "
          f"this box's GPU queue; it goes on without the console.\n"
          f"  watch: run.py --runs    compare: run.py --compare {sweep.id}    stop: run.py --stop {sweep.id}")
    if args.headless or not _interactive():
        return 0
    # In a terminal: the runs screen, where the sweep's runs appear under it as they start (Enter on
    # the sweep compares them); leaving it leaves the sweep running.
    from tui.app import make_app

    return make_app(runs_dir=runs_dir, show_runs=True, **_look(args)).run() or 0


def _look(args: argparse.Namespace) -> dict:
    return {"refresh": args.refresh, "low_bandwidth": args.low_bandwidth}


if __name__ == "__main__":
    sys.exit(main())
