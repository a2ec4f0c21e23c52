"""Desktop notifications through the terminal (no Textual): OSC 9 (iTerm2, Windows Terminal,
kitty, WezTerm, foot, ...) and OSC 777 (VTE terminals: GNOME Terminal, Tilix; urxvt). Both travel
over SSH as plain output; a terminal that knows neither ignores them.

    osc_notification("traindeck", "run 2026...-cpu: nan at step 25 → save-stop") -> str
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_CHARS = 200


def _clean(text: str) -> str:
    """No control characters (an ESC or BEL would end the sequence early), one line, bounded."""
    return " ".join(_CONTROL.sub(" ", text).split())[:MAX_CHARS]


def osc_notification(title: str, body: str) -> str:
    title, body = _clean(title), _clean(body)
    # OSC 777 separates its fields with ';': none may appear inside the title.
    return f"\x1b]9;{title}: {body}\x07\x1b]777;notify;{title.replace(';', ',')};{body}\x07"
