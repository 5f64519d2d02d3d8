"""Run sparsec artifacts with numpy, apache-tvm-ffi and TVM's runtime library only.

Importing this package never imports the `tvm` compiler package; `export` (used at compile time)
is a separate module that does.
"""

from .metadata import ArtifactMetadata, TensorInfo
from .model import CompiledModel, load

__all__ = ["ArtifactMetadata", "CompiledModel", "TensorInfo", "load"]
