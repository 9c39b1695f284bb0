"""Errors the user can act on.

Anything raised as a UserError is printed as one clear message (no traceback)
and the CLI exits with status 2 (infrastructure/usage error).
"""
from __future__ import annotations


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


class BuildFailed(Exception):
    """make returned non-zero; carries the first compiler error lines."""

    def __init__(self, message: str, first_errors: list[str], log_path: str) -> None:
        super().__init__(message)
        self.first_errors = first_errors
        self.log_path = log_path

    def __str__(self) -> str:
        lines = "\n".join(f"    {line}" for line in self.first_errors)
        return f"{self.args[0]}\n  first errors:\n{lines}\n  full log: {self.log_path}"
