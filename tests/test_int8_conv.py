"""Integer convolutions: QDQ Conv (onnxruntime.quantization on squeezenet and on a small net with
strides, asymmetric padding, dilation and batch 2), QLinearConv and ConvInteger, against
onnxruntime: within one output quantization step, and exact for ConvInteger's int32."""

import numpy as np
import onnx
import onnx.utils
import pytest
from conftest import random_feeds
from onnx import TensorProto, helper, numpy_helper
from onnx_zoo import light_model_opset13, onnxruntime_outputs

from sparsec import models

RNG = np.random.default_rng(0)


def _quantized(model: onnx.ModelProto, tmp_path, per_channel: bool, activations: str) -> onnx.ModelProto:
    source, target = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, str(source))
    models.quantize_qdq(source, target, per_channel=per_channel, activations=activations)
    return onnx.load(str(target))


def _scale_of(model: onnx.ModelProto, dequantized: str) -> float:
    producer = next(node for node in model.graph.node if node.output[0] == dequantized)
    assert producer.op_type == "DequantizeLinear"
    scale = next(init for init in model.graph.initializer if init.name == producer.input[1])
    return float(numpy_helper.to_array(scale))


def _consumer(model: onnx.ModelProto, tensor: str, op_type: str) -> str:
    """The output of the `op_type` node that reads `tensor`."""
    return next(node.output[0] for node in model.graph.node if node.op_type == op_type and node.input[0] == tensor)


def _assert_within_one_step(compiled, model: onnx.ModelProto, step: float) -> None:
    feeds = random_feeds(compiled)
    difference = np.abs(compiled.run(None, feeds)[0] - onnxruntime_outputs(model, feeds)[0]).max()
    assert difference <= step * 1.001, (difference, step)


@pytest.mark.parametrize(("per_channel", "activations"), [(True, "uint8"), (False, "int8")])
def test_qdq_squeezenet_runs_every_convolution_in_int8(compile_onnx, tmp_path, per_channel, activations):
    qdq = _quantized(light_model_opset13("squeezenet"), tmp_path, per_channel, activations)
    # end at the pooled logits: the softmax of random weights is too flat to compare
    full, cut = tmp_path / "full.onnx", tmp_path / "cut.onnx"
    onnx.save(qdq, str(full))
    pooled = _consumer(qdq, next(n.output[0] for n in qdq.graph.node if n.op_type == "GlobalAveragePool"), "QuantizeLinear")
    dequantized = _consumer(qdq, pooled, "DequantizeLinear")
    onnx.utils.extract_model(str(full), str(cut), [qdq.graph.input[0].name], [dequantized])
    model = onnx.load(str(cut))
    compiled, result = compile_onnx(model, "qdq_squeezenet")
    convolutions = [d for d in result.int8_layers if d.op.startswith("conv")]
    assert len(convolutions) == 26 and {d.op for d in convolutions} == {"conv 1x1", "conv 3x3"}
    assert {d.path for d in convolutions} == {"vnni"}
    _assert_within_one_step(compiled, model, _scale_of(model, dequantized))


def _strided_net(batch: int) -> onnx.ModelProto:
    """conv 3x3 stride 2 (asymmetric padding, 3 input channels: 27 columns) -> relu -> conv 3x3
    dilation 2 -> relu -> conv 1x1 (a pointwise layer models.prune prunes)."""
    weights = {
        "w1": RNG.standard_normal((32, 3, 3, 3)) / 5,
        "b1": RNG.standard_normal(32) / 10,
        "w2": RNG.standard_normal((64, 32, 3, 3)) / 17,
        "w3": RNG.standard_normal((64, 64, 1, 1)) / 8,
        "b3": RNG.standard_normal(64) / 10,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["y"], name="conv3"),
    ]
    io = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 17, 17]), helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    inits = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, "strided_net", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_qdq_convolutions_with_strides_padding_dilation_and_batch(compile_onnx, tmp_path):
    model = _quantized(_strided_net(batch=2), tmp_path, per_channel=True, activations="uint8")
    compiled, result = compile_onnx(model, "strided_qdq")
    assert [(d.op, d.k, d.path) for d in result.int8_layers] == [("conv 3x3", 28, "vnni"), ("conv 3x3", 288, "vnni"), ("conv 1x1", 64, "vnni")]
    _assert_within_one_step(compiled, model, _scale_of(model, model.graph.output[0].name))


def test_pruned_qdq_pointwise_convolution_runs_bsr_int8(compile_onnx, tmp_path):
    pruned = models.prune(_strided_net(batch=1), 0.9, (1, 4))
    model = _quantized(pruned, tmp_path, per_channel=True, activations="uint8")
    compiled, result = compile_onnx(model, "pruned_strided_qdq")
    assert result.int8_layers[-1].op == "conv 1x1" and result.int8_layers[-1].path == "vnni-bsr"
    _assert_within_one_step(compiled, model, _scale_of(model, model.graph.output[0].name))


def _qlinear_conv(per_channel: bool) -> onnx.ModelProto:
    out_channels = 24
    w_scale = RNG.uniform(2e-3, 8e-3, out_channels if per_channel else 1).astype(np.float32).reshape(-1 if per_channel else ())
    inits = {
        "x_scale": np.array(0.02, np.float32),
        "x_zero": np.array(110, np.uint8),
        "w": RNG.integers(-127, 128, (out_channels, 8, 3, 3)).astype(np.int8),
        "w_scale": w_scale,
        "w_zero": np.zeros(w_scale.shape, np.int8),
        "y_scale": np.array(0.04, np.float32),
        "y_zero": np.array(100, np.uint8),
        "bias": RNG.integers(-2000, 2000, out_channels).astype(np.int32),
    }
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale", "y_zero", "bias"], ["y"], name="qconv", pads=[1, 1, 1, 1])
    io = [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 8, 10, 10]), helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 24, 10, 10])]
    graph = helper.make_graph([node], "qlinear_conv", io[:1], io[1:], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv_imports_onto_the_integer_kernel(compile_onnx, per_channel):
    model = _qlinear_conv(per_channel)
    compiled, result = compile_onnx(model, "qlinear_conv")
    assert [(d.op, d.path) for d in result.int8_layers] == [("conv 3x3", "vnni")]
    x = RNG.integers(0, 256, (1, 8, 10, 10)).astype(np.uint8)
    difference = compiled.run(None, {"x": x})[0].astype(np.int32) - onnxruntime_outputs(model, {"x": x})[0].astype(np.int32)
    assert np.abs(difference).max() <= 1  # one quantization step


def test_conv_integer_is_exact(compile_onnx):
    inits = {"w": RNG.integers(0, 256, (16, 4, 3, 3)).astype(np.uint8), "x_zero": np.array(120, np.uint8), "w_zero": np.array(131, np.uint8)}
    node = helper.make_node("ConvInteger", ["x", "w", "x_zero", "w_zero"], ["y"], name="conv_integer", strides=[2, 2], pads=[0, 1, 1, 0])
    io = [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4, 9, 9]), helper.make_tensor_value_info("y", TensorProto.INT32, [2, 16, 4, 4])]
    graph = helper.make_graph([node], "conv_integer", io[:1], io[1:], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    compiled, _ = compile_onnx(model, "conv_integer")
    x = RNG.integers(0, 256, (2, 4, 9, 9)).astype(np.uint8)
    np.testing.assert_array_equal(compiled.run(None, {"x": x})[0], onnxruntime_outputs(model, {"x": x})[0])
