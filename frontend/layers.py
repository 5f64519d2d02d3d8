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
    """The compiler's dense-or-BSR choice for a MatMul/Gemm right-hand weight or a pointwise (1x1)
    convolution, as passes/dense_to_bsr.py makes it (left-hand weights and other convolutions
    stay dense)."""
    if macs is None or weight.dtype != np.float32:
        return "dense", None
    from sparsec.passes.block_sparsity import plan_layer

    if node.op_type == "Conv":
        if not _is_pointwise(node, weight):
            return "dense", None
        # NCHW is the `columns` order's own layout: x is read channels-major, no transpose
        plan = plan_layer(np.ascontiguousarray(weight.reshape(weight.shape[:2])), macs // weight.size, input_transposed=True, columns_only=True)
    elif weight.ndim == 2:
        trans_b = node.op_type == "Gemm" and _attribute(node, "transB", 0)
        weight_nk = weight if trans_b else weight.T
        plan = plan_layer(np.ascontiguousarray(weight_nk), macs // weight.size)
    else:
        return "dense", None
    if not plan.sparse:
        return "dense", plan.estimated_speedup
    return f"bsr {plan.block[0]}x{plan.block[1]} {plan.loop_order}", plan.estimated_speedup


def _is_pointwise(node: onnx.NodeProto, weight: np.ndarray) -> bool:
    """A 1x1, stride-1, unpadded, undilated, ungrouped convolution."""
    return (
        weight.ndim == 4
        and weight.shape[2:] == (1, 1)
        and _attribute(node, "group", 1) == 1
        and all(v == 1 for v in _attribute(node, "strides", [1, 1]))
        and all(v == 1 for v in _attribute(node, "dilations", [1, 1]))
        and not any(_attribute(node, "pads", [0, 0, 0, 0]))
    )


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


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
