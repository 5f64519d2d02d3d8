"""Which knob settings to measure next: all of them when the budget covers the space, otherwise an
XGBoost regressor trained on what was measured so far (knobs and the task's shape as features,
log latency as the target) ranks the rest, as AutoTVM's model-based tuner did."""

from __future__ import annotations

import json
import math
import random
import zlib

import numpy as np

BATCH = 4  # candidates measured between two model fits


def features(workload: str, knobs: dict) -> list[float]:
    """Knob values (a categorical one as a stable code: trees split on it all the same), then the
    task's dimensions in log2."""
    parsed = json.loads(workload)
    dims = [v for _, v in sorted(parsed.get("shape", {}).items()) if isinstance(v, int)]
    dims += [d for shape, _dtype in parsed.get("buffers", []) for d in shape]
    return [_number(knobs[name]) for name in sorted(knobs)] + [math.log2(d) for d in dims if d > 0]


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) else float(zlib.crc32(str(value).encode()) % 1024)


class ModelRanker:
    """Picks the next batch of knob settings for one task."""

    def __init__(self, workload: str, seed: int = 0):
        self.workload = workload
        self.random = random.Random(seed)

    def next_batch(self, unmeasured: list[dict], measured: list[tuple[dict, float]], budget: int) -> list[dict]:
        size = min(BATCH, budget, len(unmeasured))
        if len(unmeasured) <= budget or len(measured) < BATCH:
            # the whole space fits, or too little data to fit: explore (in the space's order, then random)
            return unmeasured[:size] if len(unmeasured) <= budget else self.random.sample(unmeasured, size)
        return self._predicted_fastest(unmeasured, measured, size)

    def _predicted_fastest(self, unmeasured, measured, size) -> list[dict]:
        import xgboost

        x = np.array([features(self.workload, knobs) for knobs, _ in measured])
        y = np.array([math.log(latency) for _, latency in measured])
        params = {"max_depth": 4, "eta": 0.3, "objective": "reg:squarederror", "verbosity": 0, "nthread": 1}
        model = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=50)
        predicted = model.predict(xgboost.DMatrix(np.array([features(self.workload, knobs) for knobs in unmeasured])))
        return [unmeasured[i] for i in np.argsort(predicted)[:size]]
