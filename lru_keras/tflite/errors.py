"""The errors of the TFLite path, each naming what went wrong and what to do instead."""


class UnsupportedModelError(ValueError):
    """The model (or one of its layers) cannot be exported as asked; the message says why."""


class ExportError(ValueError):
    """The exported file failed a check (Flex/custom ops, lost weight sharing)."""


class QATError(RuntimeError):
    """The QAT child process failed; the message holds the end of its output."""


class UnsupportedBackendError(ValueError):
    """Keras runs on a backend other than TensorFlow: the export and QAT build TensorFlow
    graphs from the model, which only Keras's TensorFlow backend makes."""
