"""Errors the user can act on.

Anything raised as a UserError is printed as one clear message (no traceback)
and the CLI exits with status 2 (infrastructure/usage error).
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input or missing prerequisite: the message says what and how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  how to fix: {self.hint}"
        return self.message

    def one_line(self) -> str:
        """Message and hint on one line, for a step verdict."""
        return self.message + (f" (how to fix: {self.hint})" if self.hint else "")


class OptionsDropped(UserError):
    """Requested config options missing from the final .config: the config
    under test failed (a verdict), not bad input."""


def nearest(name: str, known: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The known name closest to `name` (difflib ratio >= cutoff), or None."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'v4-fixed'?)' for a near miss (difflib ratio >= 0.6), else ''."""
    close = nearest(name, known)
    return f" (did you mean {close!r}?)" if close else ""


class BuildFailed(Exception):
    """make returned non-zero; carries the first compiler error lines."""

    def __init__(self, message: str, first_errors: list[str], log_path: str) -> None:
        super().__init__(message)
        self.first_errors = first_errors
        self.log_path = log_path

    def __str__(self) -> str:
        lines = "\n".join(f"    {line}" for line in self.first_errors)
        return f"{self.args[0]}\n  first errors:\n{lines}\n  full log: {self.log_path}"
