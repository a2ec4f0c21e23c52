"""Writes the argv it received and $TRAINDECK_TEST_VALUE to $TRAINDECK_RUN_DIR/argv_env.json, exits 0."""

import json
import os
import sys

with open(os.path.join(os.environ["TRAINDECK_RUN_DIR"], "argv_env.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "value": os.environ.get("TRAINDECK_TEST_VALUE")}, f)
