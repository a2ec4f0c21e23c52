"""`python -m training.worker RUN_DIR`: the built-in worker's entry point, as every launch names it.

The worker itself is training.engine.rank_main; this name stays so that the launches recorded in
run.json (and a torchrun restart of a run started before the move) still find it.
"""

from traindeck.rank_device import use_rank_device

if __name__ == "__main__":
    # Before torch is imported: a rank on MIG instances sees only its own (traindeck.rank_device).
    use_rank_device()

from training.engine.fast_exit import exit_without_teardown  # noqa: E402
from training.engine.rank_main import main  # noqa: E402

if __name__ == "__main__":
    exit_without_teardown(main())
