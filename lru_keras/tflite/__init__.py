"""TFLite / LiteRT path: export zoo models to .tflite files that keep weights shared, run them.

- `export(model, path, quantization="float32"|"float16"|"dynamic"|"int8", ...)`: writes the
  .tflite (builtin ops only, each shared kernel stored once unless `share_weights=False`),
  `<stem>.labels.txt` and `<stem>.json` (input spec: shape, dtype, int8 scale and zero point,
  pixel range); `reuse_loops=True` writes each LRU block as one loop over its reuses (a
  TensorFlow Lite Micro arena that does not grow with N).
- `evaluate(path, dataset, split="test")`: top-1 accuracy with LiteRT's interpreter.
- `TFLiteClassifier(path)`: `predict(images)` on pixels in [0, 255].
- `inspect(path)`: op counts, sharing of conv weights, where the bytes go, XNNPACK partitions,
  and for int8 files the TensorFlow Lite Micro figures (flash, RAM arena, ops to register).
- `quantize_aware(model, train_data, path)`: quantization-aware fine-tuning with
  tensorflow-model-optimization (in a child process), then the int8 export.

`export` and `quantize_aware` need Keras's TensorFlow backend (they trace the model into a
TensorFlow graph); under JAX or torch they raise `UnsupportedBackendError` before any work.
Running .tflite files (`TFLiteClassifier`, `evaluate`, `inspect`) works under every backend.

Modules: `export` (the steps of an export), `graph` (the export model, from each layer's
export form), `convert` (the TFLite converter), `flatbuffer` (reading and tidying .tflite
files), `calibration_data`, `equalization` and `ranges` (int8), `options` (argument checks
shared by export and QAT), `errors`, `runtime` (LiteRT), `verify` (the checks of a written
file), `micro` (TensorFlow Lite Micro), `qat` (quantization-aware training).
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
    partitions it (LiteRT's default CPU path, as in an app), the ops whose declared output
    shape is wrong, the lru_keras spec, and for an int8 file "micro": its flash, smallest
    TensorFlow Lite Micro arena and ops to register (`micro.record`, checked on seeded noise
    images; {"error", ...} if TFLM refuses the file or computes otherwise; None without the
    [micro] extra)."""
    from lru_keras import extras
    from lru_keras.tflite import flatbuffer, micro, runtime, verify

    if isinstance(path_or_bytes, (bytes, bytearray)):
        content = bytes(path_or_bytes)
    else:
        content = runtime.read_model_file(path_or_bytes)
    model = flatbuffer.read(content)
    classifier = TFLiteClassifier(content)
    classifier.predict_raw(np.zeros((1, *classifier.input_shape), classifier.input_dtype))
    full_integer = classifier.input_dtype != np.float32 and not flatbuffer.float_activations(
        model, flatbuffer.loop_state(model))
    micro_report = None
    if full_integer and extras.installed("tflite_micro"):
        pixels = np.random.default_rng(0).uniform(0, 255, (4, *classifier.input_shape))
        try:
            micro_report = micro.record(content, pixels)
        except ValueError as error:
            micro_report = {"error": str(error)}
    return {
        "size_bytes": len(content),
        "ops": flatbuffer.op_counts(model),
        "non_builtin_ops": flatbuffer.non_builtin_ops(model),
        "sharing": sharing_report(model),
        "bytes": flatbuffer.size_breakdown(model),
        "xnnpack": {"partitions": runtime.delegate_partitions(classifier),
                    "undelegated_ops": runtime.undelegated_ops(classifier)},
        "declared_shape_mismatches": [
            {"op": index, "name": name, "declared": declared, "computed": computed}
            for index, name, declared, computed in verify.declared_shape_mismatches(content)],
        "micro": micro_report,
        "spec": flatbuffer.read_metadata_json(content),
    }


__all__ = [
    "QUANTIZATIONS", "ExportError", "QATError", "TFLiteClassifier", "UnsupportedBackendError",
    "UnsupportedModelError",
    "evaluate", "evaluate_arrays", "export", "inspect", "quantize_aware", "sharing_report",
    "sidecar_paths",
]
