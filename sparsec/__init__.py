"""sparsec: an ahead-of-time compiler for pruned and quantized neural networks on CPUs.

    sparsec.compile("model.onnx", "model.so", target="llvm -mcpu=skylake-avx512")
    model = sparsec.runtime.load("model.so")
    (logits,) = model.run(None, {"input": x})

The compiler is imported lazily: `import sparsec.runtime` alone never loads TVM's compiler.
"""

from __future__ import annotations

__version__ = "0.1.0"


def compile(model, output, target="native", input_shapes=None, progress=None, sparsity_threshold=None, block=None):  # noqa: A001
    """Compile an ONNX model to a .so. See `sparsec compile --help` for the arguments;
    `block` is (rows along the output axis, columns along the reduction axis)."""
    from sparsec.driver import compile_model
    from sparsec.passes import BSROptions

    sparse = BSROptions(sparsity_threshold, tuple(block) if block else None)
    return compile_model(model, output, target=target, input_shapes=input_shapes, progress=progress, sparse=sparse)


def inspect(model, input_shapes=None):
    """Per-layer weight analysis of an ONNX model (op, weight shape, sparsity, MACs)."""
    from sparsec.frontend.layers import weighted_layers
    from sparsec.frontend.loader import load_model, parse_input_shapes

    return weighted_layers(load_model(model, parse_input_shapes(input_shapes), for_compile=False))


def load(path, num_threads=None):
    """Load a compiled artifact (same as `sparsec.runtime.load`)."""
    from sparsec.runtime import load as _load

    return _load(path, num_threads)
