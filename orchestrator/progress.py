"""Progress lines: a live status line on a terminal, plain periodic lines otherwise."""
from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """One task's progress.  `update` is cheap; output is rate limited."""

    def __init__(self, label: str, *, stream=None, plain_interval: float = 30.0) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.phase = ""
        self.plain_interval = plain_interval
        self._last_emit = 0.0
        self._live = False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self._emit(f"{phase}", force=True)

    def update(self, detail: str) -> None:
        self._emit(f"{self.phase}: {detail}" if self.phase else detail)

    def done(self, message: str) -> None:
        self._emit(message, force=True, final=True)

    def _emit(self, text: str, *, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        line = f"[{self.label}] {text} ({fmt_duration(self.elapsed())})"
        if self.tty:
            if not force and now - self._last_emit < 0.2:
                return
            self.stream.write("\r\033[K" + line[:200] + ("\n" if final or force else ""))
            self._live = not (final or force)
        else:
            if not force and now - self._last_emit < self.plain_interval:
                return
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_emit = now
