"""`training.rundir.heartbeat` is traindeck.heartbeat (it moved there: traindeck.report beats through it
without importing the name `training`). The same module object under both names."""

import sys

from traindeck import heartbeat as _heartbeat

sys.modules[__name__] = _heartbeat
