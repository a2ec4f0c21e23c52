"""Which rank failed, from the files a run left: training.supervise.diagnosis on synthetic logs."""

from __future__ import annotations

import textwrap

from training.rundir import create_run_dir
from training.supervise.diagnosis import diagnose

COLLATERAL = textwrap.dedent("""\
    Traceback (most recent call last):
      File "/x/training/engine/trainer.py", line 120, in train_step
        loss.backward()
    RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:40022: Connection reset by peer
    """)


def _torchrun_summary(codes: dict[int, int], root_cause: int) -> str:
    failures = "".join(f"[{i}]:\n  time      : 2026-12-01_00:00:01\n  host      : box\n  rank      : {r} (local_rank: {r})\n"
                       f"  exitcode  : {c} (pid: {100 + r})\n" for i, (r, c) in enumerate(codes.items()))
    return (f"torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n====\nFailures:\n{failures}"
            f"----\nRoot Cause (first observed failure):\n[0]:\n  time      : 2026-12-01_00:00:01\n"
            f"  rank      : {root_cause} (local_rank: {root_cause})\n  exitcode  : {codes[root_cause]}\n====\n")


def test_the_rank_killed_by_a_signal_is_named_even_when_both_exits_were_seen_together(tmp_path):
    """Rank 1 got SIGKILL, rank 0 died of the lost connection within the same poll: the supervisor
    saw no first exit, and torchrun's root cause (second resolution) names rank 0."""
    paths = create_run_dir(tmp_path, "x")
    (paths.logs / "rank-0.log").write_text(COLLATERAL)
    (paths.logs / "rank-1.log").write_text("step 4 loss 0.5\n")
    (paths.logs / "launcher.log").write_text(_torchrun_summary({0: 1, 1: -9}, root_cause=0))
    d = diagnose(paths, None, 1, first_exit_rank=None)
    assert d.failed_rank == 1, d
    assert "SIGKILL" in d.error[0]


def test_ranks_torchrun_stopped_with_sigterm_are_not_the_cause(tmp_path):
    paths = create_run_dir(tmp_path, "x")
    (paths.logs / "rank-0.log").write_text(COLLATERAL)
    (paths.logs / "rank-1.log").write_text("")
    (paths.logs / "rank-2.log").write_text("")
    (paths.logs / "launcher.log").write_text(_torchrun_summary({0: 1, 1: -15, 2: -9}, root_cause=0))
    assert diagnose(paths, None, 1, first_exit_rank=None).failed_rank == 2
