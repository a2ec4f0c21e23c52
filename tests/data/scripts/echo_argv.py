"""Writes the arguments it received to $TRAINDECK_RUN_DIR/argv-<rank>.json and exits 0."""

import json
import os
import sys

rank = os.environ.get("RANK", "0")
with open(os.path.join(os.environ["TRAINDECK_RUN_DIR"], f"argv-{rank}.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "omp": os.environ.get("OMP_NUM_THREADS"),
               "pythonpath": os.environ.get("PYTHONPATH", "")}, f)
