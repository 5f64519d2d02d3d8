"""Load and check ONNX models, fix their input shapes, and import them into TVM Relax."""

from .loader import LoadedModel, TensorSpec, load_model
from .op_coverage import supported_ops, unsupported_nodes
from .relax_import import import_to_relax

__all__ = ["LoadedModel", "TensorSpec", "import_to_relax", "load_model", "supported_ops", "unsupported_nodes"]
