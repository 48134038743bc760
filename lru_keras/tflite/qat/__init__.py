"""Quantization-aware training (QAT) of an LruNet with tensorflow-model-optimization.

    from lru_keras import tflite
    spec, finetuned = tflite.quantize_aware(model, "cifar10", "lrunet14.qat.int8.tflite")

tensorflow-model-optimization (tfmot) 0.8.1 only takes tf_keras models, and importing it sets
TF_USE_LEGACY_KERAS=1 in the process environment. So the training runs in a child process
(`worker.py`, run as a script), and this process, with its Keras 3
models, never imports tf_keras or tfmot. What crosses over is data, both ways:

1. out: the constants of the model's int8 export graph (`export_constants`: the shared kernels
   once, in the tiled layout, equalized, dead BatchNorm channels silenced, exactly as
   `export` freezes them), a description of the network, and where the training images are;
2. the child rebuilds that graph as a flat tf_keras model (one layer object per shared kernel,
   called at every reuse), checks that it computes this model's outputs (`transfer_error`),
   wraps it with tfmot's `quantize_apply` so that every tensor the int8 file holds is
   fake-quantized with calibrated ranges, and fine-tunes it towards the float model's outputs;
3. back: the fine-tuned constants, which `with_constants` puts into a copy of the Keras 3
   model (`finetuned`), and `export(finetuned, path, "int8")` writes the full-integer file:
   the same graph, calibration and checks as every int8 export (builtin int8 ops only, every
   activation int8, each shared kernel stored once), with labels and spec beside it.

Why the file comes from `export` and not from tfmot's own converter path: converting the
fake-quantized tf_keras model gives a file without the export's tidying (one zero bias per
shared kernel, no duplicate constants), and tfmot's stock conv quantizer quantizes a
depthwise kernel per depth-multiplier column (one scale for a multiplier-1 conv, where TFLite
uses one per channel). The fine-tune simulates the export's int8 arithmetic; the export then
calibrates the fine-tuned weights the same way.
"""

from lru_keras.tflite.qat.training import (
    DEFAULTS,
    TRANSFER_TOLERANCE,
    export_constants,
    network_description,
    quantize_aware,
    with_constants,
)

__all__ = ["DEFAULTS", "TRANSFER_TOLERANCE", "export_constants", "network_description",
           "quantize_aware", "with_constants"]
