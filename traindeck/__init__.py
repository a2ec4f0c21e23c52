"""What a user's own training script imports from traindeck: `from traindeck import report`.

This package stands alone: it imports nothing through the top-level name `training`, so a
custom script gets it on PYTHONPATH by itself (training.supervise.launch exposes only this directory),
and the script's own packages, even one called `training` or `tui`, import as they would under
plain `python train.py` or `torchrun`. It also holds the run-directory primitives that the
script's side writes (events.jsonl lines, heartbeat files); traindeck's engine (`training`)
builds on them, never the other way round.
"""

# Set by the supervisor for every process of a run: the run directory to report into.
RUN_DIR_ENV = "TRAINDECK_RUN_DIR"
