"""Tuning spaces of sparsec's own kernel families.

A hand-written kernel is built from a workload (shapes, block shape, stored blocks, epilogue:
everything JSON can carry) and knobs (tile sizes, grouping). Builders tag the PrimFunc with both,
so the tuner can rebuild any kernel of a compiled module with other knobs, and `compile
--tuning-log` can rebuild it with the best measured ones. Each family lists its valid knob
settings for a workload; the first setting of a space is not special, the default is whatever the
builder picks without knobs.

A family's tuning key is the part of the workload that decides which knobs are fastest: shapes,
block shape, density rounded to a percent, the epilogue's kind. Not the requantize scales or the
exact count of stored blocks, which differ from layer to layer and model to model: the 72 int8
BSR layers of BERT-base are 3 tasks, and a log tuned on one model serves another with the same
layer shapes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from tvm import tirx

FAMILY_ATTR = "sparsec.family"
WORKLOAD_ATTR = "sparsec.workload"
KNOBS_ATTR = "sparsec.knobs"


def whole_workload(workload: dict) -> dict:
    return workload


@dataclass(frozen=True)
class TunableFamily:
    name: str
    space: Callable[[dict], list[dict]]  # workload -> every valid knob setting
    build: Callable[[dict, dict | None], tirx.PrimFunc]  # workload, knobs (None: defaults) -> kernel
    key: Callable[[dict], dict] = whole_workload  # workload -> tuning key


def bsr_shape_key(shape: dict, block_count: int) -> dict:
    """A BSR kernel's shape in its tuning key: the layout without the exact count of stored
    blocks, and the density they make, to the percent."""
    layout = {name: value for name, value in shape.items() if name != "stored_blocks"}
    return {"shape": layout, "density": round(100 * shape["stored_blocks"] / block_count)}


def tuning_key(family: str, workload: dict) -> dict:
    known = families()
    return known[family].key(workload) if family in known else workload


def tag(func: tirx.PrimFunc, family: str, workload: dict, knobs: dict) -> tirx.PrimFunc:
    return (
        func.with_attr(FAMILY_ATTR, family)
        .with_attr(WORKLOAD_ATTR, json.dumps(workload, sort_keys=True))
        .with_attr(KNOBS_ATTR, json.dumps(knobs, sort_keys=True))
    )


def tagged_task(func: tirx.PrimFunc) -> tuple[str, str, dict] | None:
    """(family, workload JSON, knobs) of a tagged kernel."""
    attrs = func.attrs
    if attrs is None or FAMILY_ATTR not in attrs:
        return None
    return str(attrs[FAMILY_ATTR]), str(attrs[WORKLOAD_ATTR]), json.loads(str(attrs[KNOBS_ATTR]))


def families() -> dict[str, TunableFamily]:
    from . import f32_bsr_matmul, u8s8_batch_matmul, u8s8_bsr_matmul, u8s8_matmul

    found = [*f32_bsr_matmul.TUNABLE, *u8s8_matmul.TUNABLE, *u8s8_bsr_matmul.TUNABLE, *u8s8_batch_matmul.TUNABLE]
    return {family.name: family for family in found}


def divisors_among(extent: int, candidates) -> list[int]:
    return [c for c in candidates if extent % c == 0]
