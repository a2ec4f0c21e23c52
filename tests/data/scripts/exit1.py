"""Exits 1 at once, after one line on stderr."""

import sys

print("exit1.py: giving up before the first step", file=sys.stderr)
sys.exit(1)
