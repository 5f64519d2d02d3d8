"""sparsec: an ahead-of-time compiler for pruned and quantized neural networks on CPUs.

    sparsec.compile("model.onnx", "model.so", target="llvm -mcpu=skylake-avx512")
    model = sparsec.runtime.load("model.so")
    (logits,) = model.run(None, {"input": x})

The compiler is imported lazily: `import sparsec.runtime` alone never loads TVM's compiler.
"""

from __future__ import annotations

__version__ = "0.1.0"


def compile(  # noqa: A001
    model,
    output,
    target="native",
    input_shapes=None,
    progress=None,
    sparsity_threshold=None,
    block=None,
    quantize=None,
    calibration_data=None,
    calibration_method="minmax",
    exclude=(),
    smooth_alpha=0.5,
    tuning_log=None,
):
    """Compile an ONNX model to a .so. See `sparsec compile --help` for the arguments;
    `block` is (rows along the output axis, columns along the reduction axis); `quantize="int8"`
    with `calibration_data` (an .npz) quantizes an fp32 model first; `tuning_log` applies the best
    records of a `sparsec tune` log."""
    from pathlib import Path

    from sparsec.driver import compile_model
    from sparsec.errors import SparsecError
    from sparsec.passes import BSROptions
    from sparsec.quantize import QuantizationOptions

    sparse = BSROptions(sparsity_threshold, tuple(block) if block else None)
    quantization = None
    if quantize is not None:
        if quantize != "int8" or calibration_data is None:
            raise SparsecError("--quantize int8 is the only quantization, and it needs --calibration-data FILE.npz")
        quantization = QuantizationOptions(Path(calibration_data), calibration_method, tuple(exclude), smooth_alpha)
    return compile_model(
        model, output, target=target, input_shapes=input_shapes, progress=progress, sparse=sparse, quantize=quantization, tuning_log=tuning_log
    )


def inspect(model, input_shapes=None):
    """Per-layer weight analysis of an ONNX model (op, weight shape, sparsity, MACs)."""
    from sparsec.frontend.layers import weighted_layers
    from sparsec.frontend.loader import load_model, parse_input_shapes

    return weighted_layers(load_model(model, parse_input_shapes(input_shapes), for_compile=False))


def load(path, num_threads=None):
    """Load a compiled artifact (same as `sparsec.runtime.load`)."""
    from sparsec.runtime import load as _load

    return _load(path, num_threads)
