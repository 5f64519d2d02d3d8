"""The tuning log: one JSON record per line, appended and flushed as each measurement finishes, so
an interrupted run loses nothing it measured and a rerun resumes from it.

A record names its task (a kernel family and its workload: shapes, dtypes, block shape and stored
blocks, epilogue; the same layer shape in another model has the same key), the ISA it was measured
on (records are only applied to the same ISA), the candidate (knobs for sparsec's own kernel
spaces, or a MetaSchedule trace) and its latency. A confirmed record holds the median of a
re-timing that alternated the search's winner with the default; where a task has confirmed
records, they decide its best. A line that does not parse is reported with its line number and
skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sparsec.errors import SparsecError

FORMAT_VERSION = 2  # 2: tasks named by tuning keys; 1: by whole kernel workloads, re-keyed on load


@dataclass(frozen=True)
class TaskKey:
    family: str  # kernel family, e.g. "f32_bsr_columns", "u8s8_matmul_vnni", "f32_matmul"
    workload: str  # canonical JSON of what the kernel is built from

    def describe(self) -> str:
        return f"{self.family} {self.workload}"


@dataclass(frozen=True)
class Record:
    task: TaskKey
    isa: str  # TargetSpec.isa(): CPU name and explicit features
    candidate: dict  # {"knobs": {...}} or {"trace": <MetaSchedule trace JSON>}
    latency_us: float | None  # None: the candidate failed to build or run
    error: str | None = None
    threads: int | None = None
    confirmed: bool = False  # the median of the winner-vs-default re-timing

    def to_json(self) -> str:
        value = asdict(self)
        value["version"] = FORMAT_VERSION
        return json.dumps(value, sort_keys=True)

    @staticmethod
    def from_json(line: str) -> Record:
        value = json.loads(line)
        version = value.get("version")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"unknown record version {version!r}")
        task = TaskKey(**value["task"])
        if version == 1:
            task = _keyed(task)
        if not isinstance(value["candidate"], dict):
            raise ValueError("candidate is not an object")
        latency = value["latency_us"]
        latency = None if latency is None else float(latency)
        return Record(task, str(value["isa"]), value["candidate"], latency, value.get("error"), value.get("threads"), bool(value.get("confirmed", False)))


@dataclass
class LoadedLog:
    records: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # "<file>:<line>: <why>" per skipped line

    def best(self, isa: str) -> dict[TaskKey, Record]:
        """The fastest successful record of each task measured on `isa`, among its confirmed
        records when it has any (one lucky timing of many does not beat a confirmed median)."""
        found: dict[TaskKey, Record] = {}
        for record in self.records:
            if record.isa != isa or record.latency_us is None:
                continue
            current = found.get(record.task)
            if current is None or _rank(record) < _rank(current):
                found[record.task] = record
        return found

    def isas(self) -> set[str]:
        return {record.isa for record in self.records}

    def measured(self, isa: str) -> dict[TaskKey, list[Record]]:
        by_task: dict[TaskKey, list[Record]] = {}
        for record in self.records:
            if record.isa == isa:
                by_task.setdefault(record.task, []).append(record)
        return by_task


def _keyed(task: TaskKey) -> TaskKey:
    """A version-1 record's task, named by a whole workload (requantize scales and stored-block
    counts included), under its tuning key."""
    from .tasks import tagged_task_key

    return tagged_task_key(task.family, json.loads(task.workload))


def _rank(record: Record) -> tuple[bool, float]:
    return (not record.confirmed, record.latency_us)


def read_log(path: str | Path) -> LoadedLog:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise SparsecError(f"{path}: cannot read the tuning log: {err.strerror}") from None
    return parse_lines(lines, str(path))


def parse_lines(lines: Iterable[str], name: str) -> LoadedLog:
    log = LoadedLog()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            log.records.append(Record.from_json(line))
        except (ValueError, KeyError, TypeError) as err:
            log.warnings.append(f"{name}:{number}: skipped a corrupt record ({_short(err)})")
    return log


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]


class LogWriter:
    """Appends records to a log, one flushed and fsynced line each; the file is created with the
    first record (a run that measures nothing leaves none). A log that ends in a partial line (a
    run killed mid-write) gets a newline first, so the next record starts clean."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None

    def append(self, record: Record) -> None:
        if self._file is None:
            self._file = self._open()
        self._file.write(record.to_json().encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+b")  # noqa: SIM115 - closed by close()/the context manager
        if file.seek(0, os.SEEK_END) > 0:
            file.seek(-1, os.SEEK_END)
            if file.read(1) != b"\n":
                file.write(b"\n")
        return file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def merge_logs(sources: Iterable[str | Path], output: str | Path) -> tuple[int, list[str]]:
    """Every distinct record of `sources` into `output` (written whole, then renamed into place).
    Returns (records written, warnings)."""
    seen: set[str] = set()
    lines: list[str] = []
    warnings: list[str] = []
    for source in sources:
        log = read_log(source)
        warnings += log.warnings
        for record in log.records:
            line = record.to_json()
            if line not in seen:
                seen.add(line)
                lines.append(line)
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines))
    partial.replace(output)
    return len(lines), warnings

