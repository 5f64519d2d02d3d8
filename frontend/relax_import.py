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
        return from_onnx(loaded.model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as err:  # noqa: BLE001 - converters raise anything from KeyError to TVMError
        message = str(err).strip().splitlines()
        detail = message[-1] if message else type(err).__name__
        raise ModelError(f"{loaded.path}: TVM's ONNX importer rejected the model: {detail}") from err
