"""Where things are: the project root and the test data (data only: no helpers live there)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DATA = TESTS / "data"
# Scripts that tests run as a user's training script (plus the zygote fork server).
SCRIPTS = DATA / "scripts"
BAD_PROFILES = DATA / "profiles"
RECORDED_RUNS = DATA / "runs"
