"""Test models: the CNN graphs onnx ships under onnx/backend/test/data/light/ (their weights are
ConstantOfShape nodes; here they become random initializers) and helpers to run onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_MODELS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """light_<name>.onnx with every ConstantOfShape weight replaced by random values (positive
    for variances, so batch norms stay defined)."""
    model = onnx.load(str(LIGHT_MODELS / f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    shapes = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    kept_nodes, new_inits = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            new_inits.append(numpy_helper.from_array(_random_weight(node.output[0], shape, rng), node.output[0]))
        else:
            kept_nodes.append(node)
    used = {name for node in kept_nodes for name in node.input}
    inits = [i for i in model.graph.initializer if i.name in used] + new_inits
    del model.graph.node[:]
    model.graph.node.extend(kept_nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    # These are IR version 3 models, where every initializer is also listed as a graph input.
    graph_inputs = [i for i in model.graph.input if i.name in used]
    graph_inputs += [helper.make_tensor_value_info(i.name, i.data_type, i.dims) for i in new_inits]
    del model.graph.input[:]
    model.graph.input.extend(graph_inputs)
    return model


def _random_weight(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if "var" in name or "scale" in name or name.endswith("_s_0"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def onnxruntime_outputs(model: onnx.ModelProto | str | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def light_model_opset13(name: str, seed: int = 0) -> onnx.ModelProto:
    """light_model() converted to opset 13 (per-channel DequantizeLinear needs it) and IR version
    7, where initializers are no longer graph inputs: the form onnxruntime.quantization accepts."""
    from onnx import version_converter

    model = version_converter.convert_version(light_model(name, seed), 13)
    weights = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 7
    return model


def onnxruntime_quantized_encoder(directory: Path, config, seq: int = 16) -> onnx.ModelProto:
    """A BERT-shaped encoder built by sparsec.models, quantized to QDQ by onnxruntime.quantization
    (4 calibration samples)."""
    from sparsec import models

    source, quantized = directory / "fp32.onnx", directory / "qdq.onnx"
    onnx.save(models.transformer_encoder(config, seq=seq, batch=1), str(source))
    models.quantize_qdq(source, quantized, 4)
    return onnx.load(str(quantized))


def reference_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnx's ReferenceEvaluator on a copy of `model` at opset >= 21 (its QDQ ops per the current
    spec)."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, 21)
    return ReferenceEvaluator(model).run(None, feeds)
