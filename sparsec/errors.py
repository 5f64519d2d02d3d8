"""Errors caused by the user's input. The CLI prints them as one line and exits with code 2;
the Python API raises them. Anything else escaping is a bug in sparsec."""


class SparsecError(Exception):
    """Bad user input: a file, flag, model or feed that sparsec cannot take."""


class ModelError(SparsecError, ValueError):
    """The ONNX model cannot be loaded, checked or imported."""


class TargetError(SparsecError, ValueError):
    """The --target string names no CPU target sparsec can compile for."""


class FeedError(SparsecError, ValueError):
    """An input given to a compiled model does not match what the model expects."""


class ArtifactError(SparsecError, OSError):
    """A compiled artifact cannot be read or was not made by sparsec."""
