"""Dense fp32 layers through TVM's MetaSchedule (its own search space and XGBoost cost model):
the best schedule it finds comes back as a trace, which the log keeps and `compile` replays.
MetaSchedule measures its candidates with its local runner; sparsec re-times the winner like any
other candidate, so the log compares like with like."""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager

import tvm
from tvm import tirx
from tvm.target import Target

BUILDER_TIMEOUT_S = 300  # the default 30 s kills candidates on 2 busy cores


def metaschedule_best_trace(func: tirx.PrimFunc, target: Target, trials: int) -> list | None:
    """The trace (JSON-able) of MetaSchedule's fastest candidate in `trials` measurements."""
    from tvm.s_tir import meta_schedule as ms

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    # MetaSchedule logs every round to stdout at INFO; its own log files keep the detail
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sparsec-ms-") as work_dir, _reaping_worker_processes():
        database = ms.tir_integration.tune_tir(
            mod,
            target,
            work_dir,
            max_trials_global=trials,
            num_trials_per_iter=min(trials, 16),
            builder=ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S),
            cost_model="xgb",
        )
        schedule = ms.tir_integration.compile_tir(database, mod, target)
    return None if schedule is None else _plain(schedule.trace.as_json())


@contextmanager
def _reaping_worker_processes():
    """MetaSchedule's builder and runner pools leave their popen workers running after the
    search (and after this process exits): stop the ones started here."""
    import psutil

    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    try:
        yield
    finally:
        started = [child for child in me.children(recursive=True) if child.pid not in before]
        for child in started:
            child.terminate()
        psutil.wait_procs(started, timeout=5)


def _plain(value):
    """The trace's TVM containers and immediates as JSON types (apply_json_to_schedule takes both)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return value.value
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value]
