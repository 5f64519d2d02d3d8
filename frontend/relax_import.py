"""ONNX -> TVM Relax, weights as constants."""

from __future__ import annotations

from sparsec.errors import ModelError

from .loader import LoadedModel


def import_to_relax(loaded: LoadedModel):
    from tvm.relax.frontend.onnx import from_onnx

    from .converters import install

    install()
    shapes = {spec.name: list(spec.shape) for spec in loaded.inputs}
    dtypes = {spec.name: spec.dtype for spec in loaded.inputs}
    try:
        mod = from_onnx(loaded.model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as err:  # noqa: BLE001 - converters raise anything from KeyError to TVMError
        message = str(err).strip().splitlines()
        detail = message[-1] if message else type(err).__name__
        raise ModelError(f"{loaded.path}: TVM's ONNX importer rejected the model: {detail}") from err
    return _clamped_gathers(mod)


def _clamped_gathers(mod):
    """Gather imports as take(mode="fast"): no bounds check, and TVM warns on every compile that
    an out-of-range index faults. mode="clip" clamps the index instead (one min/max per index;
    the loader still rejects out-of-range token ids before they get here)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class ClampTake(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.take" and call.attrs.mode == "fast":
                return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode="clip")
            return call

    rewriter = ClampTake(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
