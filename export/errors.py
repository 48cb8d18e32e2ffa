"""Errors raised by export/; the CLI maps them to one line and exit code 2.

ExportError
 ├── ParityError        ONNX Runtime disagrees with the source model
 ├── BadWeightsError    a Darknet .weights file does not fit its .cfg
 ├── BadConfigError     a Darknet .cfg uses something we do not support
 └── RegistryError      the model registry is missing, corrupt or locked
"""


class ExportError(Exception):
    """Root of every error export/ raises on purpose."""


class ParityError(ExportError):
    pass


class BadWeightsError(ExportError):
    pass


class BadConfigError(ExportError):
    pass


class RegistryError(ExportError):
    pass
