"""Progress display for long stages: documents, MB/s and ETA.

On a terminal one line is redrawn in place; otherwise (logs, CI) a full line is printed at most
every ``interval`` seconds, so a day-long build leaves a readable log rather than megabytes of
carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, stage: str, total_bytes: int, total_items: int, *, quiet: bool = False,
                 stream: TextIO | None = None, interval: float = 5.0, unit: str = "parts",
                 amount: str = "MB"):
        self.stage, self.total_bytes, self.total_items = stage, total_bytes, total_items
        self.unit = unit  # what an item is: parts, shards, files
        self.amount = amount  # what "bytes" counts: MB of data, or a count of something else
        self._shown: tuple[int, int] | None = None  # (items, bytes) of the last line shown
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.start = time.monotonic()
        self.last = 0.0
        self.bytes = self.items = self.docs = 0

    def update(self, *, nbytes: int = 0, items: int = 0, docs: int = 0) -> None:
        self.bytes += nbytes
        self.items += items
        self.docs += docs
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._show(final=False)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        if not self.total_bytes:  # a stage counted in tasks only
            rate = self.items / elapsed
            left = (self.total_items - self.items) / rate if rate > 0 else float("inf")
            return (f"[{self.stage}] {self.items}/{self.total_items} tasks  {rate:.2f} tasks/s  "
                    f"ETA {fmt_eta(left)}")
        rate = self.bytes / elapsed
        left = (self.total_bytes - self.bytes) / rate if rate > 0 else float("inf")
        if self.amount != "MB":
            return (f"[{self.stage}] {self.items:,}/{self.total_items:,} {self.unit}  "
                    f"{self.bytes:,}/{self.total_bytes:,} {self.amount}  {rate:,.0f} {self.amount}/s  "
                    f"ETA {fmt_eta(left)}")
        return (f"[{self.stage}] {self.items}/{self.total_items} {self.unit}  {self.docs:,} docs  "
                f"{self.bytes / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB  "
                f"{rate / 1e6:.2f} MB/s  ETA {fmt_eta(left)}")

    def _show(self, final: bool) -> None:
        if self.quiet or (final and not self.tty and self._shown == (self.items, self.bytes)):
            return  # the last line said it already
        self._shown = (self.items, self.bytes)
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._show(final=True)


def log(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)
