"""Prints nothing, reports nothing, runs for a moment and exits 0."""

import time

time.sleep(1.5)
