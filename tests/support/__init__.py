"""Plain helper functions for the tests (no fixtures: those live in tests/conftest.py).

    waiting        wait_for (threads/processes) and await_for (Textual pilots), both on a deadline
    fake_runs      the one builder of run directories that look like the supervisor's (tests and benchmarks/)
    recorded_runs  writes the deterministic recorded runs in tests/data/runs (python -m tests.support.recorded_runs)
    profiles       small profiles for real runs: built-in tiny task, custom scripts, the cut-down cpu profile
    processes      process accounting: what run.json records, what the process table holds, ports
    live_runs      waiting on real runs: step reached, run ended, heartbeats, events
    engine         starting the worker directly, the way the supervisor does
    picker         the console on its picker over one shipped profile, on a fake box; starts recorded

No test module imports another test module; they all import from here.
"""
