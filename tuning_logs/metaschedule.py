"""Dense fp32 layers through TVM's MetaSchedule (its own search space and XGBoost cost model):
the best schedule it finds comes back as a trace, which the log keeps and `compile` replays.
MetaSchedule measures its candidates with its local runner; sparsec re-times the winner like any
other candidate, so the log compares like with like."""

from __future__ import annotations

import tempfile

import tvm
from tvm import tirx
from tvm.target import Target

BUILDER_TIMEOUT_S = 300  # the default 30 s kills candidates on 2 busy cores


def metaschedule_best_trace(func: tirx.PrimFunc, target: Target, trials: int) -> list | None:
    """The trace (JSON-able) of MetaSchedule's fastest candidate in `trials` measurements."""
    from tvm.s_tir import meta_schedule as ms

    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    with tempfile.TemporaryDirectory(prefix="sparsec-ms-") as work_dir:
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
