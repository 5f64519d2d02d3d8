"""What `sparsec tune` shows while it works: on a terminal, a live display (overall tasks, the
current task's trials, its best latency, the ETA); otherwise one plain line per measurement."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from .tuner import Progress, TaskOutcome


def _latency(us: float | None) -> str:
    return "failed" if us is None else f"{us:,.1f} us"


class PlainProgress(Progress):
    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.started = time.perf_counter()
        self.budget = 0

    def task_started(self, index, total, task, budget) -> None:
        self.budget = budget
        self.write(f"task {index + 1}/{total}: {task.kernel} ({task.key.family}, {task.call_sites} call site(s))")

    def measured(self, outcome: TaskOutcome, latency_us) -> None:
        done = outcome.measured + outcome.resumed
        self.write(f"  trial {done}/{self.budget}: {_latency(latency_us)}  best {_latency(outcome.best_us)}  [{time.perf_counter() - self.started:.0f}s]")

    def task_finished(self, outcome: TaskOutcome) -> None:
        if outcome.measured == 0:
            self.write(f"  done before (resumed from the log): best {_latency(outcome.best_us)}")


class LiveProgress(Progress):
    """rich's progress bars: one for the tasks, one for the current task's trials."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.bars.start()
        self.overall = None
        self.current = None

    def task_started(self, index, total, task, budget) -> None:
        if self.overall is None:
            self.overall = self.bars.add_task("all tasks", total=total, best="")
        if self.current is not None:
            self.bars.remove_task(self.current)
        self.current = self.bars.add_task(f"{task.kernel}", total=budget, best="")

    def measured(self, outcome: TaskOutcome, latency_us) -> None:
        self.bars.update(self.current, completed=outcome.measured + outcome.resumed, best=f"best {_latency(outcome.best_us)}")

    def task_finished(self, outcome: TaskOutcome) -> None:
        self.bars.update(self.current, completed=self.bars.tasks[-1].total, best=f"best {_latency(outcome.best_us)}")
        self.bars.advance(self.overall)

    def close(self) -> None:
        self.bars.stop()


def progress_for(stream=sys.stderr) -> Progress:
    if stream.isatty():
        return LiveProgress()
    return PlainProgress(lambda line: print(line, file=stream, flush=True))
