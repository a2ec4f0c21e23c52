"""The one placeholder syntax of a profile: Python format fields, `{{` and `}}` for literal braces.

    args = ["--out_dir={run_dir}/checkpoints", "--tag={run_id}", "--json={{\"a\": 1}}"]

`problem()` is what the profile loader asks (an unknown name is a profile error with its line);
`fill()` is what the launch does once the run directory exists. Only bare names: no attribute,
index, conversion or format spec, so a value can never reach into an object.
"""

from __future__ import annotations

import string
from typing import Mapping

# The names `[train] args` and `[launch] env` may use, with what each becomes.
RUN_PLACEHOLDERS = {
    "run_dir": "the run directory",
    "checkpoints": "the run's checkpoints directory",
    "run_id": "the run id",
}

# The names `[notify] command` may use (training.monitor.notify): the event's fields and the run's.
NOTIFY_PLACEHOLDERS = {
    "kind": "what is told: health, end or test",
    "rule": "the health rule (nan, divergence, ...); for an end, the final state",
    "message": "the event's message",
    "action": "what was done (warn, pause, save-stop, stop, rewind)",
    "value": "the value the rule saw",
    "step": "the step",
    "state": "for an end, the final state (finished, failed)",
    "run_id": "the run id",
    "run_dir": "the run directory",
}

_FORMATTER = string.Formatter()


def problem(template: str, names: Mapping[str, str]) -> str | None:
    """Why `template` cannot be filled with `names`, or None when it can."""
    known = ", ".join("{" + n + "}" for n in names)
    try:
        fields = [(name, conversion, spec) for _, name, spec, conversion in _FORMATTER.parse(template)
                  if name is not None]
    except ValueError as exc:
        return (f"has a stray brace ({exc}); write {{{{ and }}}} for a literal brace, or a placeholder "
                f"such as {known}")
    for name, conversion, spec in fields:
        if name not in names:
            shown = "{" + name + "}" if name else "{}"
            return f"uses the unknown placeholder {shown}; known: {known} (write {{{{ and }}}} for a literal brace)"
        if conversion or spec:
            return f"uses {{{name}}} with a conversion or format spec; write it bare, as {{{name}}}"
    return None


def fill(template: str, values: Mapping[str, str]) -> str:
    """The template with its placeholders replaced (profile loading has checked it)."""
    return template.format_map(values)
