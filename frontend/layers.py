"""Per-layer analysis of the layers that carry weights (MatMul, Gemm, Conv): weight shape,
weight sparsity (fraction of exact zeros) and multiply-accumulates, as `sparsec inspect` shows."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .loader import LoadedModel

WEIGHTED_OPS = ("MatMul", "Gemm", "Conv")


@dataclass(frozen=True)
class LayerInfo:
    name: str
    op: str
    weight: str
    weight_shape: tuple[int, ...]
    sparsity: float
    macs: int | None
    kernel: str = "dense"  # what `compile` would choose: "dense" or "bsr RxC <loop order>"
    estimated_speedup: float | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["weight_shape"] = list(self.weight_shape)
        return data


def weighted_layers(loaded: LoadedModel) -> list[LayerInfo]:
    from sparsec.passes.block_sparsity import zero_fraction  # the compiler's own measure (imports TVM)

    initializers = loaded.initializers()
    shapes = _value_shapes(loaded.model)
    layers = []
    for index, node in enumerate(loaded.graph.node):
        if node.op_type not in WEIGHTED_OPS:
            continue
        weight_name = _weight_input(node, initializers)
        if weight_name is None:
            continue
        weight = numpy_helper.to_array(initializers[weight_name])
        out_shape = shapes.get(node.output[0])
        macs = _macs(node, weight.shape, out_shape)
        kernel, speedup = _sparse_plan(node, weight, macs) if weight_name == node.input[1] else ("dense", None)
        layers.append(
            LayerInfo(
                name=node.name or f"{node.op_type}_{index}",
                op=node.op_type,
                weight=weight_name,
                weight_shape=tuple(weight.shape),
                sparsity=zero_fraction(weight),
                macs=macs,
                kernel=kernel,
                estimated_speedup=speedup,
            )
        )
    return layers


def _sparse_plan(node: onnx.NodeProto, weight: np.ndarray, macs: int | None) -> tuple[str, float | None]:
    """The compiler's dense-or-BSR choice for a MatMul/Gemm right-hand weight (convolutions and
    left-hand weights stay dense: passes/dense_to_bsr.py rewrites x @ W only)."""
    if node.op_type == "Conv" or weight.ndim != 2 or macs is None or weight.dtype != np.float32:
        return "dense", None
    from sparsec.passes.block_sparsity import plan_layer

    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    weight_nk = weight if trans_b else weight.T
    plan = plan_layer(np.ascontiguousarray(weight_nk), macs // weight.size)
    if not plan.sparse:
        return "dense", plan.estimated_speedup
    return f"bsr {plan.block[0]}x{plan.block[1]} {plan.loop_order}", plan.estimated_speedup


def _weight_input(node: onnx.NodeProto, initializers: dict) -> str | None:
    """The initializer the layer multiplies by (either side of a MatMul)."""
    candidates = node.input[1:2] if node.op_type != "MatMul" else node.input[1::-1]
    for name in candidates:
        if name in initializers and len(initializers[name].dims) >= 2:
            return name
    return None


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def _macs(node: onnx.NodeProto, weight_shape: tuple[int, ...], out_shape: tuple[int, ...] | None) -> int | None:
    if out_shape is None:
        return None
    outputs = math.prod(out_shape)
    if node.op_type == "Conv":
        return outputs * math.prod(weight_shape[1:])  # (Cin / group) * kH * kW per output
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return outputs * (weight_shape[1] if trans_b else weight_shape[0])
    return outputs * weight_shape[0]  # MatMul x @ W: reduction over W's rows
