"""Which ONNX ops sparsec compiles. The table is TVM Relax's ONNX converter table, read at import
time so it follows the installed TVM, plus the converters sparsec registers itself."""

from __future__ import annotations

from functools import lru_cache

import onnx

# Domains whose ops the converter table covers (com.microsoft: the fused ops onnxruntime's
# transformer optimizer writes, e.g. SkipLayerNormalization).
CONVERTIBLE_DOMAINS = ("", "ai.onnx", "com.microsoft")


@lru_cache(maxsize=1)
def supported_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    from .converters import install

    install()
    return frozenset(onnx_frontend._get_convert_map())


def unsupported_nodes(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    """(node name, op type) of every node, in subgraphs too, that cannot be converted."""
    ops = supported_ops()
    found = []
    for node in _all_nodes(graph):
        if node.domain not in CONVERTIBLE_DOMAINS or node.op_type not in ops:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            found.append((node.name or f"<unnamed {node.op_type}>", op))
    return found


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)
