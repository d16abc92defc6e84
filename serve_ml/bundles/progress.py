"""Training progress on a terminal: a bar per model that redraws in place; in a log
(stderr not a terminal) every fifth of the epochs, one line each."""

from __future__ import annotations

import re
import sys
from typing import TextIO

_EPOCH = re.compile(r"^(?P<head>\s*\[(?P<label>[^\]]+)\]) epoch (?P<i>\d+)/(?P<n>\d+)(?P<tail>.*)$")
WIDTH = 30


class ProgressPrinter:
    """A builder ``progress`` callback: ``ProgressPrinter()(message)``."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._open = False  # a bar is drawn and its line not ended

    def __call__(self, message: str) -> None:
        m = _EPOCH.match(message)
        if m is None:
            self._end_line()
            print(message, file=self.stream, flush=True)
            return
        i, n = int(m["i"]), int(m["n"])
        if not self.tty:
            if i == 1 or i == n or i % max(1, n // 5) == 0:
                print(message, file=self.stream, flush=True)
            return
        done = WIDTH * i // n
        bar = "█" * done + "░" * (WIDTH - done)
        self.stream.write(f"\r{m['head']} {bar} {i}/{n}{m['tail']}")
        self.stream.flush()
        self._open = i < n
        if i == n:
            self.stream.write("\n")

    def _end_line(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = False
