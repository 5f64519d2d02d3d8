"""Post-training quantization: an fp32 ONNX model + calibration samples -> a QDQ model that the
compiler runs on integer kernels, and a per-layer report of the error it costs.

The QDQ graph is written by onnxruntime.quantization (the calibration is theirs: MinMax or
Percentile): weights symmetric int8 per output channel (zeros stay exactly zero), activations
uint8 with a zero point. Only MatMul/Gemm layers with a constant weight are quantized: they are
what the integer kernels accelerate, and everything between them stays fp32 (no requantization
of GELU, softmax or the attention products).

Before that, SmoothQuant (Xiao et al., 2022) moves activation outliers into the weights: a
transformer's layer-norm outputs have a few channels 10-100x larger than the rest, and one
per-tensor uint8 scale then rounds the ordinary channels away. Each input channel k of a layer
group sharing an input is divided by s_k = max|x_k|^a / max|W_k|^(1-a) and the weights' row k
multiplied by it: the product is unchanged in fp32, the ranges are balanced for int8.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from sparsec.errors import ModelError, SparsecError

CALIBRATION_METHODS = ("minmax", "percentile")
QUANTIZED_OPS = ("MatMul", "Gemm")


@dataclass(frozen=True)
class QuantizationOptions:
    calibration_data: Path
    method: str = "minmax"
    exclude: tuple[str, ...] = ()  # node names kept in fp32
    smooth_alpha: float = 0.5  # SmoothQuant migration strength; 0 turns it off


@dataclass(frozen=True)
class LayerError:
    node: str
    relative_error: float  # ||y_int8 - y_fp32|| / ||y_fp32|| over the calibration samples


def load_calibration_samples(path: Path, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """An .npz with one array per model input, samples along the first axis (or one sample with
    exactly the input's rank)."""
    try:
        archive = np.load(path)
    except (OSError, ValueError) as err:
        raise SparsecError(f"--calibration-data {path}: not a readable .npz ({err})") from err
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    missing = [value.name for value in inputs if value.name not in archive.files]
    if missing:
        raise SparsecError(f"--calibration-data {path}: no array for input(s) {', '.join(missing)} (has: {', '.join(archive.files) or 'none'})")
    counts = set()
    arrays = {}
    for value in inputs:
        array = archive[value.name]
        rank = len(value.type.tensor_type.shape.dim)
        if array.ndim == rank:
            array = array[None]
        elif array.ndim != rank + 1:
            raise SparsecError(f"--calibration-data {path}: {value.name!r} has shape {array.shape}; expected [samples, ...] with {rank} dims per sample")
        arrays[value.name] = array
        counts.add(array.shape[0])
    if len(counts) != 1:
        raise SparsecError(f"--calibration-data {path}: the inputs have different sample counts {sorted(counts)}")
    return [{name: array[i] for name, array in arrays.items()} for i in range(counts.pop())]


def quantize_model(model_path: Path, output_path: Path, options: QuantizationOptions) -> list[LayerError]:
    """Write the QDQ model for `model_path` to `output_path`; return each quantized layer's error."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as err:
        raise SparsecError("--quantize needs onnxruntime's quantization tools: pip install 'sparsec[quantize]'") from err
    if options.method not in CALIBRATION_METHODS:
        raise SparsecError(f"--calibration-method {options.method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    model = onnx.load(str(model_path))
    node_names = {node.name for node in model.graph.node}
    unknown = [name for name in options.exclude if name not in node_names]
    if unknown:
        raise SparsecError(f"--exclude {', '.join(unknown)}: no node of that name in {model_path}")
    samples = load_calibration_samples(options.calibration_data, model)
    layers = [n for n in model.graph.node if _constant_weight(model, n) is not None and n.name not in options.exclude]
    if options.smooth_alpha > 0:
        model = smooth_activations(model, layers, samples, options.smooth_alpha)
        layers = [n for n in model.graph.node if n.name in {layer.name for layer in layers}]
    weightless = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and _constant_weight(model, n) is None]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(samples)

        def get_next(self):
            return next(self.remaining, None)

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[options.method]
    smoothed_path = output_path.with_suffix(".smoothed.onnx")
    onnx.save(model, str(smoothed_path))
    try:
        quantize_static(
            str(smoothed_path),
            str(output_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=[*options.exclude, *weightless],
            calibrate_method=method,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    except Exception as err:  # noqa: BLE001 - onnxruntime raises anything from its calibration
        raise ModelError(f"{model_path}: quantization failed: {str(err).strip().splitlines()[-1]}") from err
    finally:
        smoothed_path.unlink(missing_ok=True)
    return layer_errors(onnx.load(str(model_path)), onnx.load(str(output_path)), layers, samples)


def _constant_weight(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[onnx.TensorProto, bool] | None:
    """(the weight initializer, whether its rows are output channels) of a MatMul/Gemm x @ W."""
    if node.op_type not in QUANTIZED_OPS or len(node.input) < 2:
        return None
    weight = next((init for init in model.graph.initializer if init.name == node.input[1]), None)
    if weight is None or len(weight.dims) != 2:
        return None
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
        return None
    return weight, transposed


def smooth_activations(model: onnx.ModelProto, layers, samples, alpha: float) -> onnx.ModelProto:
    """SmoothQuant on every group of `layers` that reads the same activation (Q, K, V share one)."""
    from onnx import numpy_helper

    model = _copy(model)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.name in {layer.name for layer in layers}:
            groups.setdefault(node.input[0], []).append(node)
    activations = _run_with_outputs(model, list(groups), samples)
    for name, nodes in groups.items():
        x_max = np.max([np.abs(v).reshape(-1, v.shape[-1]).max(axis=0) for v in activations[name]], axis=0)
        weights = []
        for node in nodes:
            init, transposed = _constant_weight(model, node)
            array = numpy_helper.to_array(init)
            weights.append((init, transposed, array.T if transposed else array))  # as [K, N]
        w_max = np.max([np.abs(w).max(axis=1) for _, _, w in weights], axis=0)
        scale = np.where((x_max > 0) & (w_max > 0), x_max**alpha / np.maximum(w_max, 1e-12) ** (1 - alpha), 1.0)
        scale = np.clip(scale, 1e-4, 1e4).astype(np.float32)
        for init, transposed, w in weights:
            smoothed = w * scale[:, None]
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(smoothed.T if transposed else smoothed).astype(np.float32), init.name))
        inverse = f"{name}.smooth_inverse"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
        smoothed_name = f"{name}.smoothed"
        position = min(list(model.graph.node).index(node) for node in nodes)
        model.graph.node.insert(position, onnx.helper.make_node("Mul", [name, inverse], [smoothed_name], name=f"{name}.smooth"))
        for node in nodes:
            node.input[0] = smoothed_name
    return model


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def layer_errors(fp32: onnx.ModelProto, qdq: onnx.ModelProto, nodes, samples) -> list[LayerError]:
    """Each node's output in both models on the calibration samples (onnxruntime, CPU)."""
    outputs = [node.output[0] for node in nodes]
    fp32_values, qdq_values = (_run_with_outputs(model, outputs, samples) for model in (fp32, qdq))
    errors = []
    for node, name in zip(nodes, outputs):
        reference = np.concatenate([v.ravel() for v in fp32_values[name]])
        approximate = np.concatenate([v.ravel() for v in qdq_values[name]])
        scale = max(float(np.linalg.norm(reference)), 1e-30)
        errors.append(LayerError(node.name or name, float(np.linalg.norm(approximate - reference)) / scale))
    return errors


def _run_with_outputs(model: onnx.ModelProto, names: list[str], samples) -> dict[str, list[np.ndarray]]:
    import onnxruntime as ort

    probe = _copy(model)
    existing = {output.name for output in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in existing)
    with tempfile.TemporaryDirectory() as scratch:  # external-data-safe: save, then let ORT read the file
        path = Path(scratch) / "probe.onnx"
        onnx.save(probe, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        output_names = [o.name for o in session.get_outputs()]
        values: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for sample in samples:
            for name, value in zip(output_names, session.run(None, sample)):
                if name in values:
                    values[name].append(value)
    return values
