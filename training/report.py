"""`from training import report` still works: this name is traindeck.report itself.

The reporting API moved to `traindeck.report` (importable by a user's script without the name
`training`). This module replaces itself in sys.modules with that one, so both names share the
one process-wide reporter (a built-in worker configures it, a script's import finds it set up).
"""

import sys

from traindeck import report as _report

sys.modules[__name__] = _report
