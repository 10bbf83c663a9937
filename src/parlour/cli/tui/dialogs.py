"""Dialogs of the full-screen client."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

__all__ = ["PasswordScreen"]


class PasswordScreen(ModalScreen[tuple[str, str] | None]):
    """Asks the old password and the new one twice, hidden."""

    DEFAULT_CSS = """
    PasswordScreen { align: center middle; }
    PasswordScreen > Vertical { width: 50; height: auto; border: round $primary; padding: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Change password (Esc cancels)")
            yield Input(placeholder="old password", password=True, id="old")
            yield Input(placeholder="new password", password=True, id="new")
            yield Input(placeholder="new password again", password=True, id="again")
            yield Label("", id="problem")

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        old, new, again = (self.query_one(f"#{n}", Input) for n in ("old", "new", "again"))
        if event.input is old:
            new.focus()
        elif event.input is new:
            again.focus()
        elif new.value != again.value:
            self.query_one("#problem", Label).update("the new passwords differ")
            again.value = ""
            new.focus()
        else:
            self.dismiss((old.value, new.value))

    def action_cancel(self) -> None:
        self.dismiss(None)
