"""What a long command shows while it works, on stderr.

The pipeline reports `progress(task, done, total)` (`ncc.compiler.pipeline.Progress`):
phases without units as (task, 0, 1) then (task, 1, 1), calibration and verification
per step or sequence. `Reporter` turns that into:

- on a terminal: a live line from the first second (the current phase, with a bar
  where it has units), naming the job ("cfc.ckpt -> c");
- elsewhere (a log file, CI): one line per finished phase with its time;
- `--verbose`: the per-phase lines on a terminal too; `--quiet`: nothing.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

MODES = ("quiet", "normal", "verbose")

PHASE_LINE = re.compile(r".+: [\w ().>-]+ \d+\.\d s")
"""A finished phase as `Reporter` writes it: "<job>: <phase> <seconds> s"."""


def without_phase_lines(text: str) -> list[str]:
    """The lines of a command's stderr that are not phase lines (its errors, warnings)."""
    return [line for line in text.strip().splitlines() if not PHASE_LINE.fullmatch(line)]


class Reporter:
    """A `Progress` callback for one job. `check()` runs on every call: the CLI raises a
    pending interrupt there."""

    def __init__(self, label: str, mode: str = "normal", check: Callable[[], None] = lambda: None,
                 stream: TextIO | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.label, self.mode, self.check = label, mode, check
        self.stream = stream or sys.stderr
        self.live = mode != "quiet" and self.stream.isatty()
        self.lines = mode == "verbose" or (mode == "normal" and not self.live)
        self.task: str | None = None
        self.started = 0.0
        self.bar: Any = None
        self.bar_task: Any = None

    def __enter__(self) -> Reporter:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), transient=True,
                                console=Console(file=self.stream))
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._finish()
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, task: str, done: int, total: int) -> None:
        self.check()
        if task != self.task:
            self._finish()
            self._start(task, total)
        if self.bar is not None and self.bar_task is not None:
            self.bar.update(self.bar_task, completed=done, total=total if total > 1 else None)
        if total and done >= total:
            self._finish()

    def _start(self, task: str, total: int) -> None:
        self.task, self.started = task, time.perf_counter()
        if self.bar is not None:
            # a phase without units (total 1) pulses instead of showing 0/1
            self.bar_task = self.bar.add_task(f"{self.label}: {task}",
                                              total=total if total > 1 else None)

    def _finish(self) -> None:
        if self.task is None:
            return
        seconds = time.perf_counter() - self.started
        if self.bar is not None and self.bar_task is not None:
            self.bar.remove_task(self.bar_task)
            self.bar_task = None
        if self.lines:
            line = f"{self.label}: {self.task} {seconds:.1f} s"
            if self.bar is not None:
                self.bar.console.print(line, highlight=False)
            else:
                print(line, file=self.stream, flush=True)
        self.task = None
