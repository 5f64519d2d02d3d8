"""`sparsec inspect MODEL --log LOG`: which of a model's tuning tasks a log has records for."""

from __future__ import annotations

from pathlib import Path

from sparsec.target import parse_target

from .records import read_log
from .tasks import extract_tasks


def log_coverage(model: Path, log_path: Path, target: str, input_shapes) -> dict:
    from sparsec.driver import optimized_module

    spec = parse_target(target)
    tuning_log = read_log(log_path)
    _, mod, _, _ = optimized_module(model, spec, input_shapes, lambda _line: None, schedule=False)
    best = tuning_log.best(spec.isa())
    measured = tuning_log.measured(spec.isa())
    tasks = []
    for task in extract_tasks(mod, spec.to_tvm()):
        record = best.get(task.key)
        candidate = None if record is None else ("MetaSchedule trace" if "trace" in record.candidate else record.candidate)
        tasks.append(
            {
                "kernel": task.kernel,
                "family": task.key.family,
                "call_sites": task.call_sites,
                "records": len(measured.get(task.key, [])),
                "best_us": None if record is None else record.latency_us,
                "candidate": candidate,
            }
        )
    warnings = list(tuning_log.warnings)
    if tuning_log.records and spec.isa() not in tuning_log.isas():
        warnings.append(f"the log was tuned for {', '.join(sorted(tuning_log.isas()))}, not {spec.isa()}")
    return {"log": str(log_path), "isa": spec.isa(), "covered": sum(t["best_us"] is not None for t in tasks), "tasks": tasks, "warnings": warnings}
