"""`python -m training.worker RUN_DIR`: the built-in worker's entry point, as every launch names it.

The worker itself is training.engine.worker; this name stays so that the launches recorded in
run.json (and a torchrun restart of a run started before the move) still find it.
"""

from training.engine.fast_exit import exit_without_teardown
from training.engine.worker import main

if __name__ == "__main__":
    exit_without_teardown(main())
