"""Dense fp32 layers through TVM's MetaSchedule (its own search space and XGBoost cost model):
the best schedule it finds comes back as a trace, which the log keeps and `compile` replays.
MetaSchedule measures its candidates on this host, or with `--rpc-tracker` on the tracker's
servers (its RPCRunner; the builds stay local); sparsec re-times the winner like any other
candidate, so the log compares like with like."""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
from contextlib import contextmanager

import tvm
from tvm import tirx
from tvm.target import Target

from .measure import RPCSettings

BUILDER_TIMEOUT_S = 300  # the default 30 s kills candidates on 2 busy cores
DEFAULT_POPULATION = 512  # EvolutionarySearch's own default
MIN_POPULATION = 32
POPULATION_PER_TRIAL = 8


def metaschedule_best_trace(func: tirx.PrimFunc, target: Target, trials: int, rpc: RPCSettings | None = None) -> list | None:
    """The trace (JSON-able) of MetaSchedule's fastest candidate in `trials` measurements."""
    from tvm.s_tir import meta_schedule as ms

    _register_x86_intrinsics_only()
    runner = ms.runner.LocalRunner(initializer=_register_x86_intrinsics_only)
    if rpc is not None:
        config = ms.runner.RPCConfig(rpc.tracker_host, rpc.tracker_port, rpc.key, session_timeout_sec=rpc.timeout_s)
        runner = ms.runner.RPCRunner(config, initializer=_register_x86_intrinsics_only)

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
            builder=ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S, initializer=_register_x86_intrinsics_only),
            runner=runner,
            strategy=_search_strategy(ms, trials),
            cost_model="xgb",
        )
        schedule = ms.tir_integration.compile_tir(database, mod, target)
    return None if schedule is None else _plain(schedule.trace.as_json())


def _register_x86_intrinsics_only() -> None:
    """MetaSchedule imports tvm.s_tir.tensor_intrin, whose package __init__ parses every CUDA,
    ROCm, Hexagon, Arm and RISC-V intrinsic TVM has (50-70 s per process, measured here); x86
    targets need the x86 ones only (0.2 s). The package is registered without running its
    __init__, so that import finds it; its other submodules still import on demand. Runs here
    and, as their initializer, in MetaSchedule's builder and runner worker processes."""
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        sys.modules[name] = importlib.util.module_from_spec(importlib.util.find_spec(name))
    importlib.import_module(f"{name}.x86")


def _search_strategy(ms, trials: int):
    """MetaSchedule's evolutionary search, its population scaled down for small budgets: the
    default 512 candidates per generation cost a minute of search before a run of a few trials."""
    population = max(MIN_POPULATION, min(DEFAULT_POPULATION, POPULATION_PER_TRIAL * trials))
    return ms.search_strategy.EvolutionarySearch(population_size=population, init_min_unmeasured=min(50, population // 2))


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
