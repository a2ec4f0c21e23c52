"""A user's own training script, laid out the way real projects are (tests/e2e/test_user_project.py).

Run by hand from this directory it works the same: `python train.py`, `torchrun --nproc-per-node 2
train.py`, or `python -m training.loop`. It imports a local module (model.py) and the project's
own package named `training` (which traindeck's must not shadow), execs a config file and reads
data by relative paths, and reports through `from traindeck import report`.
"""

from training.loop import main

if __name__ == "__main__":
    main()
