"""Latency statistics and output agreement."""

from __future__ import annotations

import numpy as np


def summarize(rounds: list[list[float]], batch: int) -> dict:
    """Pooled latency percentiles (ms), throughput (items/s) and the spread of round medians."""
    pooled = np.array([latency for latencies in rounds for latency in latencies]) * 1e3
    round_medians = np.array([np.median(latencies) for latencies in rounds]) * 1e3
    return {
        "runs": int(pooled.size),
        "throughput_items_per_s": float(batch * 1e3 / pooled.mean()),
        "latency_ms": {
            "mean": float(pooled.mean()),
            "median": float(np.median(pooled)),
            "p90": float(np.percentile(pooled, 90)),
            "p99": float(np.percentile(pooled, 99)),
        },
        "round_median_ms": {
            "min": float(round_medians.min()),
            "median": float(np.median(round_medians)),
            "max": float(round_medians.max()),
        },
    }


def compare_outputs(ours: list[np.ndarray], reference: list[np.ndarray], rtol: float) -> dict:
    """Max error relative to the reference's largest magnitude, per output."""
    if len(ours) != len(reference):
        return {"outputs_agree": False, "max_relative_error": None, "detail": f"{len(ours)} outputs vs {len(reference)}"}
    errors = []
    for mine, theirs in zip(ours, reference):
        if mine.shape != theirs.shape:
            return {"outputs_agree": False, "max_relative_error": None, "detail": f"shape {mine.shape} vs {theirs.shape}"}
        scale = max(float(np.abs(theirs).max()), 1e-30)
        errors.append(float(np.abs(mine.astype(np.float64) - theirs.astype(np.float64)).max()) / scale)
    worst = max(errors, default=0.0)
    return {"outputs_agree": worst <= rtol, "max_relative_error": worst, "rtol": rtol}
