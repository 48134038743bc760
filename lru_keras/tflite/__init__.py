"""TFLite / LiteRT path: export zoo models to .tflite files that keep weights shared, run them.

- `export(model, path, quantization="float32"|"float16"|"dynamic"|"int8", ...)`: writes the
  .tflite (builtin ops only, each shared kernel stored once unless `share_weights=False`),
  `<stem>.labels.txt` and `<stem>.json` (input spec: shape, dtype, int8 scale and zero point,
  pixel range).
- `evaluate(path, dataset, split="test")`: top-1 accuracy with LiteRT's interpreter.
- `TFLiteClassifier(path)`: `predict(images)` on pixels in [0, 255].
- `inspect(path)`: op counts, sharing of conv weights, where the bytes go, XNNPACK partitions.
- `quantize_aware(model, train_data, path)`: quantization-aware fine-tuning with
  tensorflow-model-optimization (in a child process), then the int8 export.

`export` and `quantize_aware` need Keras's TensorFlow backend (they trace the model into a
TensorFlow graph); under JAX or torch they raise `UnsupportedBackendError` before any work.
Running .tflite files (`TFLiteClassifier`, `evaluate`, `inspect`) works under every backend.

Modules: `export` (the steps of an export), `graph` (the export model, from each layer's
export form), `convert` (the TFLite converter), `flatbuffer` (reading and tidying .tflite
files), `calibration_data`, `equalization` and `ranges` (int8), `options` (argument checks
shared by export and QAT), `errors`, `runtime` (LiteRT), `qat` (quantization-aware training).
"""

import numpy as np

from lru_keras.tflite.convert import QUANTIZATIONS
from lru_keras.tflite.errors import (
    ExportError,
    QATError,
    UnsupportedBackendError,
    UnsupportedModelError,
)
from lru_keras.tflite.export import export, sharing_report
from lru_keras.tflite.options import sidecar_paths
from lru_keras.tflite.qat import quantize_aware
from lru_keras.tflite.runtime import TFLiteClassifier, evaluate, evaluate_arrays


def inspect(path_or_bytes):
    """A dict describing a .tflite: ops, conv weight sharing, size breakdown, how XNNPACK
    partitions it (LiteRT's default CPU path, as in an app), lru_keras spec."""
    from lru_keras.tflite import flatbuffer

    if isinstance(path_or_bytes, (bytes, bytearray)):
        content = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as f:
            content = f.read()
    from lru_keras.tflite import runtime

    model = flatbuffer.read(content)
    classifier = TFLiteClassifier(content)
    classifier.predict_raw(np.zeros((1, *classifier.input_shape), classifier.input_dtype))
    return {
        "size_bytes": len(content),
        "ops": flatbuffer.op_counts(model),
        "non_builtin_ops": flatbuffer.non_builtin_ops(model),
        "sharing": sharing_report(model),
        "bytes": flatbuffer.size_breakdown(model),
        "xnnpack": {"partitions": runtime.delegate_partitions(classifier),
                    "undelegated_ops": runtime.undelegated_ops(classifier)},
        "spec": flatbuffer.read_metadata_json(content),
    }


__all__ = [
    "QUANTIZATIONS", "ExportError", "QATError", "TFLiteClassifier", "UnsupportedBackendError",
    "UnsupportedModelError",
    "evaluate", "evaluate_arrays", "export", "inspect", "quantize_aware", "sharing_report",
    "sidecar_paths",
]
