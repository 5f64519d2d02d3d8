"""An equivalent copy of a QDQ model for OpenVINO, whose CPU plugin cannot compile the original.

OpenVINO 2026.4's low-precision transformations throw on onnxruntime.quantization's BERT
embeddings ("AddTransformation ... index '0' out of range" on the Add of the gathered word
embedding and the sliced position embedding, each behind a QuantizeLinear/DequantizeLinear pair).
Quantize-dequantize is elementwise, so it commutes with Gather and Slice: the copy applies each
such pair to the constant table itself (a float initializer holding the fake-quantized values)
and drops the pair from the graph. Every value the model computes is unchanged; only where the
rounding happens moves, from after the lookup to the table.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

LOOKUPS = ("Gather", "Slice")


def constant_value(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """An initializer, or the output of a DequantizeLinear over initializers."""
    initializers = {i.name: i for i in graph.initializer}
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    producer = next((n for n in graph.node if name in n.output), None)
    if producer is None or producer.op_type != "DequantizeLinear" or producer.input[0] not in initializers:
        return None
    return _run_node(producer, {producer.input[0]: numpy_helper.to_array(initializers[producer.input[0]]), **_parameters(graph, producer)})


def fold_lookup_qdq(model: onnx.ModelProto) -> int:
    """Move Q/DQ pairs after a lookup of a constant table onto the table; returns how many."""
    graph = model.graph
    consumers = _consumers(graph)
    outputs = {output.name for output in graph.output}
    released: set[str] = set()  # values the removed nodes and the replaced tables read
    folded = 0
    for lookup in [n for n in graph.node if n.op_type in LOOKUPS]:
        quantize = _only_consumer(consumers, lookup.output[0], "QuantizeLinear")
        dequantize = quantize and _only_consumer(consumers, quantize.output[0], "DequantizeLinear")
        if dequantize is None or dequantize.output[0] in outputs or not _constant_per_tensor(graph, quantize, dequantize):
            continue
        table = constant_value(graph, lookup.input[0])
        if table is None:
            continue
        fake_quantized = _fake_quantize(graph, table, quantize, dequantize)
        name = f"{lookup.input[0]}_fake_quantized"
        graph.initializer.append(numpy_helper.from_array(fake_quantized, name))
        released.update([lookup.input[0], *quantize.input, *dequantize.input])
        lookup.input[0] = name
        for node in graph.node:
            for slot, value in enumerate(node.input):
                if value == dequantize.output[0]:
                    node.input[slot] = lookup.output[0]
        graph.node.remove(quantize)
        graph.node.remove(dequantize)
        folded += 1
    _remove_released(graph, released)
    return folded


def _remove_released(graph: onnx.GraphProto, released: set[str]) -> None:
    """A replaced table's own DequantizeLinear, and initializers nothing reads any more."""
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in released and n.output[0] not in used]:
        released.update(node.input)
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for initializer in [i for i in graph.initializer if i.name in released and i.name not in used]:
        graph.initializer.remove(initializer)


def _constant_per_tensor(graph: onnx.GraphProto, *nodes: onnx.NodeProto) -> bool:
    """Scales and zero points are scalar initializers (a per-axis pair's axis counts in the
    lookup's output, not in the table: such pairs stay)."""
    for node in nodes:
        parameters = _parameters(graph, node)
        if len(parameters) != len([name for name in node.input[1:] if name]) or any(value.size != 1 for value in parameters.values()):
            return False
    return True


def _fake_quantize(graph, table: np.ndarray, quantize, dequantize) -> np.ndarray:
    quantized = _run_node(quantize, {quantize.input[0]: table, **_parameters(graph, quantize)})
    return _run_node(dequantize, {dequantize.input[0]: quantized, **_parameters(graph, dequantize)})


def _parameters(graph: onnx.GraphProto, node: onnx.NodeProto) -> dict[str, np.ndarray]:
    """A QuantizeLinear's or DequantizeLinear's scale and zero point (initializers)."""
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in node.input[1:]}


def _run_node(node: onnx.NodeProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape) for name, value in feeds.items()]
    output = onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.UNDEFINED, None)
    single = onnx.helper.make_model(onnx.helper.make_graph([node], "node", inputs, [output]), opset_imports=[onnx.helper.make_opsetid("", 21)])
    return ReferenceEvaluator(single).run(None, feeds)[0]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _only_consumer(consumers, value: str, op_type: str) -> onnx.NodeProto | None:
    users = consumers.get(value, [])
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None
