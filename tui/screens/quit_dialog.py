"""Quitting while a run is live: stop the run, or detach and let it train on?

Dismisses with "stop", "detach" or None (cancel). Detach is the default: the run lives in its
own session, so leaving the console never harms it.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class QuitDialog(ModalScreen[str | None]):
    BINDINGS = [
        Binding("s", "choose('stop')", "Stop the run"),
        Binding("d", "choose('detach')", "Detach"),
        Binding("escape,c", "choose(None)", "Cancel"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__(classes="dialog")
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(f"Run {self.run_id} is still training.", classes="dialog-question")
            yield Static("Stop the run, or detach and let it train on? You can attach again later with "
                         "'run.py --attach'.", classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Stop the run [s]", variant="error", id="stop")
                yield Button("Detach [d]", variant="primary", id="detach")
                yield Button("Cancel [esc]", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#detach", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
