"""Which rank failed, from the files a run left: training.supervise.diagnosis on synthetic logs."""

from __future__ import annotations

import textwrap

from tests.support.fake_runs import two_node_head
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


# ---- a multi-node run: the failure is named by the node where it started -------------------------

LOST_PEER = ["torch.distributed.DistNetworkError: Connection closed by peer [127.0.0.2]:29500"]
REAL = ["ValueError: bad batch at step 12"]


def test_a_lost_peer_on_the_head_is_named_by_the_node_with_the_real_error():
    from training.supervise.diagnosis import node_root_cause

    exits = {"gpu-b": {"state": "failed", "failed_rank": 3, "error": REAL, "t": 20.0},
             "gpu-c": {"state": "failed", "failed_rank": 4, "error": LOST_PEER, "t": 19.0},
             "gpu-d": {"state": "stopped", "failed_rank": None, "error": []}}
    assert node_root_cause(LOST_PEER, exits) == ("gpu-b", exits["gpu-b"])
    assert node_root_cause(REAL, exits) is None  # the head's own real error is the story
    assert node_root_cause(LOST_PEER, {"gpu-c": exits["gpu-c"], "gpu-e": None}) is None


def test_the_heads_exit_names_the_node_after_the_drain(tmp_path):
    from training.rundir import RunState
    from training.supervise.outcome import RunResult

    _, sup = two_node_head(tmp_path, {"state": "failed", "failed_rank": 3, "error": REAL, "hint": None, "t": 20.0})
    head = RunResult(RunState.FAILED, 1, 0, LOST_PEER, None, f"rank 0 failed: {LOST_PEER[0]}")
    named = sup.nodes.named_by_the_node_where_it_started(head)
    assert (named.failed_rank, named.error, sup.nodes.dropped_node) == (3, REAL, "gpu-b")
    assert named.message == "rank 3 on node gpu-b failed: ValueError: bad batch at step 12"
    # A genuine error of the head's own rank keeps its name.
    sup.nodes.dropped_node = None
    own = RunResult(RunState.FAILED, 1, 0, REAL, None, "rank 0 failed")
    assert sup.nodes.named_by_the_node_where_it_started(own) is own and sup.nodes.dropped_node is None


def test_shared_memory_and_missing_kernel_failures_get_the_fix():
    # Issue 30, items 2 and 10: a container's 64 MB /dev/shm, a wheel without the GPU's architecture.
    from training.supervise.diagnosis import make_hint

    bus = ("RuntimeError: DataLoader worker (pid 4242) is killed by signal: Bus error. It is possible that "
           "dataloader's workers are out of shared memory. Please try to raise your shared memory limit.")
    nccl = "NCCL WARN Error: failed to extend /dev/shm/nccl-Xy12 to 9637892 bytes"
    for text in (bus, nccl):
        hint = make_hint(text, 0, None)
        assert "--ipc=host" in hint and "--shm-size" in hint and "medium: Memory" in hint
    kernel = "torch.AcceleratorError: CUDA error: no kernel image is available for execution on the device"
    assert "sm_100" in make_hint(kernel, 0, None) and "cu128" in make_hint(kernel, 0, None)


def test_a_gloo_teardown_abort_gets_the_barrier_hint():
    """torch 2.13's gloo: a rank leaving the group while its peer still uses it dies in std::terminate
    with no traceback (reproduced: 4 of 16 bare torchrun runs of a 2-rank script that ends unevenly)."""
    from training.supervise.diagnosis import make_hint

    hint = make_hint("terminate called without an active exception\n", 1, None)
    assert hint is not None and "barrier()" in hint and "destroy_process_group" in hint
