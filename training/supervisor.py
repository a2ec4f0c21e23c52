"""`python -m training.supervisor RUN_DIR`: the supervisor's entry point, as start_run spawns it.

The state machine itself is training.supervise.run_supervisor; this name stays so that every console,
old or new, starts the supervisor the same way.
"""

import sys

from training.supervise.run_supervisor import main

if __name__ == "__main__":
    sys.exit(main())
