"""The picker: every profile with its description and hardware match, the selected profile's
TOML, its preflight, and keys to start or rehearse it.

A profile that does not load is listed as invalid and its ProfileError is shown in place of
the preflight; the TOML pane then shows the file as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static, TextArea
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from training.profile import PROFILES_DIR, Profile, ProfileError, load_profile
from tui import messages


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    path: Path
    text: str
    profile: Profile | None
    error: str | None
    match: str


def _short(path: Path) -> str:
    """A path as the user knows it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _match_style(match: str) -> str:
    if match.startswith("ok"):
        return "bold green"
    if match.startswith("~"):
        return "bold yellow"
    if match == "any":
        return "dim"
    return "bold red"


class PickerScreen(Screen):
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("w", "start_queued", "Start queued"),
        Binding("r", "rehearse", "Rehearse"),
        Binding("g", "scaling", "Scaling"),
        Binding("a", "runs", "Runs"),
        Binding("q", "app.quit", "Quit"),
    ]

    @dataclass
    class ProfilesLoaded(Message):
        entries: list[ProfileEntry]

    @dataclass
    class PreflightDone(Message):
        name: str
        lines: list[str]
        ok: bool

    def __init__(self, profiles_dir: Path | None = None, runs_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.profiles_dir = Path(profiles_dir or PROFILES_DIR)
        self.runs_dir = Path(runs_dir or "runs")
        self.entries: dict[str, ProfileEntry] = {}
        self.preflight_ready = False

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("traindeck", "bold"), "  pick a profile  ",
                                   (_short(self.profiles_dir), "dim")), id="picker-title")
        with Horizontal(id="picker-body"):
            with Vertical(id="picker-left"):
                yield OptionList(id="profile-list")
            with Vertical(id="picker-right"):
                yield TextArea("", language="toml", read_only=True, show_line_numbers=True, id="profile-toml",
                               soft_wrap=True)
                with VerticalScroll(id="preflight-box"):
                    yield Static("", id="preflight")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#profile-list").border_title = "profiles"
        self.query_one("#profile-toml").border_title = "profile"
        self.query_one("#preflight-box").border_title = "preflight"
        self._load_profiles()

    # ---- workers ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="profiles", exit_on_error=False)
    def _load_profiles(self) -> None:
        from training.console.preflight import hardware_match

        backend = self.app.gpu_backend
        entries = []
        for path in sorted(self.profiles_dir.glob("*.toml")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                text = f"# cannot read {path}: {exc}"
            try:
                profile = load_profile(str(path), profiles_dir=self.profiles_dir)
                entries.append(ProfileEntry(profile.name, path, text, profile, None, hardware_match(profile, backend)))
            except ProfileError as exc:
                entries.append(ProfileEntry(path.stem, path, text, None, str(exc), "invalid"))
        self.post_message(self.ProfilesLoaded(entries))

    @work(thread=True, exclusive=True, group="preflight", exit_on_error=False)
    def _preflight(self, entry: ProfileEntry) -> None:
        report = self.app.preflight(entry.profile, self.runs_dir)
        self.post_message(self.PreflightDone(entry.name, report.lines, report.ok))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.query_one("#preflight", Static).update(Text(f"{event.worker.group} failed: {event.worker.error}",
                                                             "bold red"))

    # ---- showing ----------------------------------------------------------------------------
    def on_picker_screen_profiles_loaded(self, message: ProfilesLoaded) -> None:
        self.entries = {e.name: e for e in message.entries}
        options = self.query_one(OptionList)
        options.clear_options()
        for n, entry in enumerate(message.entries):
            if n:
                options.add_option(None)  # a separator line between profiles
            prompt = Text(no_wrap=False)
            prompt.append(entry.name, "bold")
            prompt.append("  ")
            prompt.append(entry.match, _match_style(entry.match))
            if entry.profile is not None:
                prompt.append(f"  {entry.profile.launch.mode}×{entry.profile.world_size}", "dim")
                prompt.append("\n" + (entry.profile.description or "(no description)"), "italic")
            else:
                prompt.append("\n" + "does not load; see the error", "red")
            options.add_option(Option(prompt, id=entry.name))
        if message.entries:
            default = next((e.name for e in message.entries if e.name == "cpu"), message.entries[0].name)
            options.highlighted = options.get_option_index(default)
        else:
            self.query_one("#preflight", Static).update(f"no profiles in {self.profiles_dir}")
        options.focus()

    @property
    def selected(self) -> ProfileEntry | None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            return None
        return self.entries.get(options.get_option_at_index(options.highlighted).id or "")

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        entry = self.entries.get(event.option.id or "")
        if entry is None:
            return
        area = self.query_one(TextArea)
        area.load_text(entry.text)
        area.border_title = _short(entry.path)
        preflight = self.query_one("#preflight", Static)
        self.preflight_ready = False
        if entry.profile is None:
            preflight.update(Text(entry.error or "invalid profile", "bold red"))
            self.query_one("#preflight-box").add_class("-error")
            self.preflight_ready = True
            return
        self.query_one("#preflight-box").remove_class("-error")
        preflight.update(Text("checking…", "dim"))
        self._preflight(entry)

    def on_picker_screen_preflight_done(self, message: PreflightDone) -> None:
        entry = self.selected
        if entry is None or entry.name != message.name:
            return
        text = Text()
        # The verdict first; the profile's description is already in the list.
        lines = message.lines[-1:] + message.lines[1:-1]
        for line in lines:
            style = ""
            if line.startswith("[ok"):
                style = "green"
            elif line.startswith("[warn"):
                style = "yellow"
            elif line.startswith("[FAIL") or "FAILED" in line:
                style = "bold red"
            elif line.startswith("preflight passed"):
                style = "bold green"
            elif line.startswith("would run"):
                style = "dim"
            text.append(line + "\n", style)
        self.query_one("#preflight", Static).update(text)
        self.preflight_ready = True

    # ---- keys -------------------------------------------------------------------------------
    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_start()

    def _startable(self) -> Profile | None:
        entry = self.selected
        if entry is None:
            return None
        if entry.profile is None:
            self.notify(entry.error or "invalid profile", title=f"{entry.name} does not load", severity="error")
            return None
        return entry.profile

    def action_start(self) -> None:
        profile = self._startable()
        if profile is not None:
            self.post_message(messages.StartRun(profile))

    def action_start_queued(self) -> None:
        """Start, waiting in line while the GPUs it takes are busy (run.py --queue)."""
        profile = self._startable()
        if profile is not None:
            self.post_message(messages.StartRun(profile, queue=True))

    def action_rehearse(self) -> None:
        profile = self._startable()
        if profile is not None:
            self.post_message(messages.StartRun(profile, rehearsal=True))

    def action_scaling(self) -> None:
        """run.py --scaling: the profile at 1, 2, 4 ... N GPUs, each size on the run screen as it runs."""
        profile = self._startable()
        if profile is not None:
            self.post_message(messages.MeasureScaling(profile))

    def action_runs(self) -> None:
        self.post_message(messages.ShowRuns())
