"""`sparsec tune`: measure candidates for every distinct tunable kernel of a model and append the
results to a log. A task's default kernel is measured first (the baseline the records must beat),
then knob settings chosen by search.ModelRanker; dense fp32 tasks give half their budget (and
what the knob space leaves unused) to MetaSchedule. When the search's winner is not the default,
the two are timed again, alternately, and their medians logged as confirmed records: on a shared
machine the lowest of many single timings is usually a lucky one (measured here: most BSR
"winners" of a run were slower than the default when re-timed). Candidates already in the log
for this ISA are not measured again, so rerunning the same command resumes an interrupted run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tvm.target import Target

from sparsec.errors import SparsecError
from sparsec.target import TargetSpec

from .measure import Measurer, build_kernel, output_buffers
from .metaschedule import metaschedule_best_trace
from .records import LogWriter, Record, read_log
from .search import ModelRanker
from .tasks import Task, build_candidate, extract_tasks, random_inputs

MIN_TRIALS_PER_TASK = 2  # the default and one alternative
CONFIRM_ROUNDS = 3  # alternating re-timings of winner and default


@dataclass
class TaskOutcome:
    task: Task
    default_us: float | None = None
    best_us: float | None = None
    best_candidate: dict | None = None
    measured: int = 0  # this run
    resumed: int = 0  # found in the log
    seen: list[tuple[dict, float | None]] = field(default_factory=list)  # (candidate, latency)
    confirmed: bool = False


@dataclass
class TuneReport:
    outcomes: list[TaskOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Progress:
    """Per-task and overall progress; `plain` writes one line per event (not a terminal)."""

    def task_started(self, index: int, total: int, task: Task, budget: int) -> None: ...
    def measured(self, outcome: TaskOutcome, latency_us: float | None) -> None: ...
    def task_finished(self, outcome: TaskOutcome) -> None: ...
    def close(self) -> None: ...


def tune_tasks(
    tasks: list[Task],
    spec: TargetSpec,
    log_path: Path,
    trials: int,
    measurer: Measurer,
    progress: Progress,
    metaschedule: bool = True,
) -> TuneReport:
    """Spend `trials` measurements over `tasks` (evenly, at least MIN_TRIALS_PER_TASK each)."""
    report = TuneReport()
    existing = read_log(log_path) if log_path.exists() else None
    if existing is not None:
        report.warnings += existing.warnings
    done = existing.measured(spec.isa()) if existing is not None else {}
    budget = max(MIN_TRIALS_PER_TASK, trials // max(1, len(tasks)))
    target = spec.to_tvm()
    with LogWriter(log_path) as writer:
        for index, task in enumerate(tasks):
            outcome = TaskOutcome(task)
            for record in done.get(task.key, []):
                _note(outcome, record.candidate, record.latency_us)
                outcome.resumed += 1
                outcome.confirmed |= record.confirmed
            progress.task_started(index, len(tasks), task, budget)
            _tune_one(task, outcome, budget, target, spec, measurer, writer, progress, metaschedule)
            if not outcome.confirmed:
                _confirm(task, outcome, target, spec, measurer, writer)
            progress.task_finished(outcome)
            report.outcomes.append(outcome)
    return report


def default_candidate(task: Task) -> dict:
    return {"knobs": task.default_knobs} if task.default_knobs is not None else {"default": True}


def _tune_one(task, outcome, budget, target: Target, spec, measurer, writer, progress, metaschedule) -> None:
    seen = [candidate for candidate, _ in outcome.seen]
    measured_knobs = [c.get("knobs") for c in seen]
    remaining = budget - outcome.resumed
    if default_candidate(task) not in seen and remaining > 0:
        _measure(task, None, outcome, target, spec, measurer, writer, progress)
        remaining -= 1
    use_metaschedule = metaschedule and task.uses_metaschedule and not _has_trace(outcome)
    metaschedule_budget = remaining // 2 if use_metaschedule and remaining >= 2 * MIN_TRIALS_PER_TASK else 0
    remaining -= metaschedule_budget
    space = [k for k in task.space(target) if k not in measured_knobs and k != task.default_knobs]
    ranker = ModelRanker(task.key.workload)
    while remaining > 0 and space:
        batch = ranker.next_batch(space, _knob_latencies(outcome), remaining)
        for knobs in batch:
            _measure(task, {"knobs": knobs}, outcome, target, spec, measurer, writer, progress)
            space.remove(knobs)
            remaining -= 1
    if metaschedule_budget:
        try:
            trace = metaschedule_best_trace(task.func, target, metaschedule_budget + remaining, measurer.rpc)
        except Exception as err:  # noqa: BLE001 - recorded (so a resumed run does not retry it); the other tasks go on
            trace, why = None, _one_line(err)
        else:
            why = "MetaSchedule found no valid schedule"
        if trace is not None:
            _measure(task, {"trace": trace}, outcome, target, spec, measurer, writer, progress)
        else:
            _record(task, {"trace": None}, None, why, outcome, spec, writer, progress)


def _built(task, candidate, target) -> tuple:
    """(library, arguments) for timing a candidate."""
    func = build_candidate(task, candidate, target)
    arrays = random_inputs(task)
    return build_kernel(func, target), arrays + output_buffers(func, len(arrays))


def _measure(task, candidate, outcome, target, spec: TargetSpec, measurer: Measurer, writer: LogWriter, progress) -> None:
    latency, error = None, None
    try:
        latency = measurer.time(*_built(task, candidate, target))
    except SparsecError:
        raise  # the measuring machine is unreachable: stop rather than log every candidate as failed
    except Exception as err:  # noqa: BLE001 - a failing candidate is recorded, the search goes on
        error = _one_line(err)
    _record(task, candidate if candidate is not None else default_candidate(task), latency, error, outcome, spec, writer, progress)


def _confirm(task, outcome: TaskOutcome, target, spec: TargetSpec, measurer: Measurer, writer: LogWriter) -> None:
    """Time the search's winner and the default again, alternately; log both medians as
    confirmed records (they decide the task's best from now on) and report those."""
    default = default_candidate(task)
    if outcome.best_candidate is None or outcome.best_candidate == default or outcome.default_us is None:
        return
    contenders = [default, outcome.best_candidate]
    timings: list[list[float]] = [[] for _ in contenders]
    try:
        built = [_built(task, candidate, target) for candidate in contenders]
        for _ in range(CONFIRM_ROUNDS):
            for (lib, arguments), times in zip(built, timings):
                times.append(measurer.time(lib, arguments))
    except SparsecError:
        raise
    except Exception:  # noqa: BLE001 - both ran in the search; if one fails now, the search's records stand
        return
    medians = [sorted(times)[len(times) // 2] for times in timings]
    for candidate, median in zip(contenders, medians):
        writer.append(Record(task.key, spec.isa(), candidate, median, None, _measuring_threads(), confirmed=True))
    outcome.default_us = medians[0]
    outcome.best_us, outcome.best_candidate = min(zip(medians, contenders), key=lambda pair: pair[0])
    outcome.confirmed = True


def _one_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[-1][:300] if text else type(err).__name__


def _record(task, candidate: dict, latency, error, outcome, spec: TargetSpec, writer: LogWriter, progress) -> None:
    writer.append(Record(task.key, spec.isa(), candidate, latency, error, _measuring_threads()))
    _note(outcome, candidate, latency)
    outcome.measured += 1
    progress.measured(outcome, latency)


def _measuring_threads() -> int | None:
    return int(os.environ.get("TVM_NUM_THREADS", "0")) or None


def _note(outcome: TaskOutcome, candidate: dict, latency: float | None) -> None:
    outcome.seen.append((candidate, latency))
    if latency is None:
        return
    if candidate == default_candidate(outcome.task):
        outcome.default_us = latency if outcome.default_us is None else min(outcome.default_us, latency)
    if outcome.best_us is None or latency < outcome.best_us:
        outcome.best_us, outcome.best_candidate = latency, candidate


def _knob_latencies(outcome: TaskOutcome) -> list[tuple[dict, float]]:
    return [(c["knobs"], t) for c, t in outcome.seen if t is not None and c.get("knobs") is not None]


def _has_trace(outcome: TaskOutcome) -> bool:
    return any("trace" in c for c, _ in outcome.seen)


def tune_model(
    model: Path,
    log_path: Path,
    spec: TargetSpec,
    trials: int,
    progress: Progress,
    say,
    input_shapes=None,
    rpc=None,
    metaschedule: bool = True,
) -> TuneReport:
    """Extract the model's tasks as `compile` would build them, then tune them into `log_path`."""
    from sparsec.driver import optimized_module
    from sparsec.runtime.tvm_runtime import default_num_threads

    # before TVM's thread pool starts: it would otherwise run half the cores, unlike deployment
    threads = spec.num_cores or default_num_threads()
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))

    measurer = Measurer(rpc)
    try:
        _, mod, _, _ = optimized_module(model, spec, input_shapes, say, schedule=False)
        tasks = extract_tasks(mod, spec.to_tvm())
        say(f"{len(tasks)} tunable tasks; measuring on {measurer.where()}, {trials} trials in all")
        return tune_tasks(tasks, spec, log_path, trials, measurer, progress, metaschedule)
    finally:
        measurer.close()
        progress.close()
