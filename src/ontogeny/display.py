"""What the command line shows while it works: the training progress bar (or plain lines in a log) and the step
under way of analyze, report and export. Printing only; the commands are in cli.py."""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(width=None if sys.stdout.isatty() else 120)  # pipes and logs get whole tables


class ProgressDisplay:
    """A rich progress bar over all steps of all ensembles: steps/s, members ok/diverged, accuracy ranges. Output
    that is no terminal (a log file, a CI job) gets one plain line every `plain_seconds` instead, and at the end."""

    def __init__(self, plain_seconds: float = 10.0):
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("eta"),
                            TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console)
        self.task, self.steps, self.started, self.done_before = None, 0, time.monotonic(), 0
        self.plain, self.plain_seconds, self.last_line = not console.is_terminal, plain_seconds, -math.inf
        self.total, self.done, self.status = 0, 0, ""

    def start(self, n_ensembles: int, steps: int, members) -> None:
        self.steps, self.n_members, self.total = steps, len(members), n_ensembles * steps
        if self.plain:
            self._line()
            return
        self.bar.start()
        self.task = self.bar.add_task(f"{len(members)} members", total=self.total, speed="", status="")

    def step(self, ensemble: int, step: int) -> None:
        self._update(ensemble * self.steps + step)

    def checkpoint(self, ensemble: int, step: int, scalars: dict, trainer) -> None:
        n_diverged = sum(s is not None for s in trainer.diverged_step)
        parts = [f"ensemble {ensemble}: ok {len(trainer.members) - n_diverged} diverged {n_diverged}"]
        for name in ("train/acc", "test/acc"):
            if name in scalars:
                parts.append(f"{name} {scalars[name].min():.2f}-{scalars[name].max():.2f}")
        self._update(ensemble * self.steps + step, "  ".join(parts))

    def overall(self, steps_done: int, *, running: int, failed: int) -> None:
        """Progress of a distributed run: steps recorded over all ensembles, tasks running and failed."""
        self._update(steps_done, f"tasks running {running}" + (f", failed {failed}" if failed else ""))

    def _update(self, done: int, status: str | None = None) -> None:
        self.done, self.status = done, self.status if status is None else status
        if self.plain:
            if time.monotonic() - self.last_line >= self.plain_seconds:
                self._line()
            return
        speed = f"{done / max(time.monotonic() - self.started, 1e-9):.0f} steps/s"
        self.bar.update(self.task, completed=done, speed=speed, **({} if status is None else {"status": status}))

    def _line(self) -> None:
        """One plain progress line: steps done of the total, speed, time left, the latest status."""
        self.last_line, elapsed = time.monotonic(), time.monotonic() - self.started
        rate = self.done / max(elapsed, 1e-9)
        left = f", about {(self.total - self.done) / rate:,.0f} s left" if 0 < self.done < self.total else ""
        console.print(f"[{time.strftime('%H:%M:%S')}] {self.done:,}/{self.total:,} steps "
                      f"({self.done / max(self.total, 1):.0%}) of {self.n_members} members, {rate:.0f} steps/s"
                      f"{left}" + (f"; {self.status}" if self.status else ""), markup=False, highlight=False)

    def stop(self) -> None:
        if self.plain:
            if self.total:
                self._line()
            return
        self.bar.stop()


PLAIN_PROGRESS_AFTER = 5.0  # seconds before a command that is not on a terminal starts printing its progress lines


@contextmanager
def step_progress(command: str):
    """A progress callback (name, number, total) on standard error, so standard output keeps the results (and
    --json stays JSON): a status line that updates on a terminal, else one plain line per step once the command
    has run PLAIN_PROGRESS_AFTER seconds (a quick command, or a quick refusal, stays one line)."""
    errors = Console(stderr=True)
    started = time.monotonic()
    if not errors.is_terminal:
        def line(name, number, total):
            if time.monotonic() - started >= PLAIN_PROGRESS_AFTER:
                errors.print(f"[{time.strftime('%H:%M:%S')}] {command}: {name} ({number}/{total}), "
                             f"{time.monotonic() - started:.0f} s so far", markup=False, highlight=False)
        yield line
        return
    with errors.status(f"{command}: starting") as status:
        yield lambda name, number, total: status.update(
            f"{command}: {name} ({number}/{total}), {time.monotonic() - started:.0f} s so far")
