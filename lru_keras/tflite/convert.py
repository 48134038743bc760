"""Keras export model -> .tflite bytes with the TFLite converter, builtin ops only.

The converter is given a frozen concrete function (variables turned into constants first:
a Keras 3 BatchNormalization's moving statistics otherwise stay resource variables, which a
.tflite cannot initialise, and the outputs come out NaN). Only TFLITE_BUILTINS (int8:
TFLITE_BUILTINS_INT8) are allowed, so an op LiteRT lacks fails the conversion instead of
silently becoming a Flex op (`model.export(format="litert")` enables SELECT_TF_OPS). The error names the ops and the layers they come from.
"""

import re
import warnings

import numpy as np
import tensorflow as tf

from lru_keras.tflite.errors import UnsupportedModelError

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
RANGES = ("mse", "minmax")
CALIBRATION_BATCH = 50


IO_DTYPES = ("int8", "uint8")


def convert(model, quantization, images=None, ranges="mse", io_dtype="int8"):
    """The .tflite bytes of a Keras model (an export model from `graph.export_model`).

    Args:
        model: a Keras model with one input of known non-batch shape.
        quantization: "float32", "float16" (weights in float16), "dynamic" (int8 weights,
            float activations) or "int8" (full integer, int8 input and output).
        images: for "int8", the calibration images (float32, in the model's input range).
        ranges: for "int8", "minmax" (the converter's own calibration: observed min/max of
            each activation) or "mse" (min/max refined per tensor to the least quantization
            error, `ranges.refine_ranges`; the default, measured better).
        io_dtype: for "int8", the input and output type: "int8", or "uint8" (what Android's
            Task Library and TensorBuffer take; a QUANTIZE op at each end shifts by 128).
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}; expected one of {list(QUANTIZATIONS)}")
    spec = model.inputs[0]
    shape = tuple(spec.shape[1:])
    if any(d is None for d in shape):
        raise UnsupportedModelError(
            f"model {model.name!r} has input shape {tuple(spec.shape)}; export needs a fixed "
            f"image shape (height, width, channels), e.g. build it with input_shape=(32, 32, 3).")
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([None, *shape], tf.float32, "image")])
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    concrete = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if images is None or len(images) == 0:
            raise ValueError("int8 quantization needs calibration images")
        if ranges not in RANGES:
            raise ValueError(f"ranges={ranges!r}; expected one of {list(RANGES)}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration_function(images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype not in IO_DTYPES:
            raise ValueError(f"io_dtype={io_dtype!r}; expected one of {list(IO_DTYPES)}")
        converter.inference_input_type = converter.inference_output_type = tf.as_dtype(io_dtype)
        # Two steps, as tf.lite's QuantizationDebugger does: calibrate only (the float model
        # with observed ranges), adjust the ranges, then quantize with the MLIR quantizer.
        converter._experimental_calibrate_only = ranges != "minmax"  # noqa: SLF001
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            content = bytes(converter.convert())
    except Exception as error:  # noqa: BLE001  (ConverterError and friends)
        raise UnsupportedModelError(
            describe_conversion_error(model, quantization, error, concrete.graph)) from None
    if quantization == "int8" and ranges != "minmax":
        from tensorflow.lite.python import convert as tflite_convert

        from lru_keras.tflite.ranges import refine_ranges

        content, _ = refine_ranges(content, images)
        try:
            content = bytes(tflite_convert.mlir_quantize(
                content, input_data_type=tf.as_dtype(io_dtype),
                output_data_type=tf.as_dtype(io_dtype)))
        except Exception as error:  # noqa: BLE001
            raise UnsupportedModelError(
                describe_conversion_error(model, quantization, error)) from None
    return content


def describe_conversion_error(model, quantization, error, tf_graph=None):
    """A readable message for a failed conversion: the ops LiteRT lacks and their layers.

    The op types come from the converter's message ("tf.Dilation2D", "Custom ops: ..."); the
    layers from the names of those ops in the traced graph ("<model>_1/<layer>_1/<Op>").
    """
    text = str(error)
    ops = set(re.findall(r"'tf\.([A-Za-z0-9_]+)' op is neither a custom op nor a flex op", text))
    ops |= set(re.findall(r"\btf\.([A-Za-z0-9_]+)\(", text))
    for line in re.findall(r"(?:Custom|Flex) ops: ([^\n]+)", text):
        ops |= {op.strip() for op in line.split(",") if op.strip()}
    ops = sorted(ops)
    paths = [op.name for op in tf_graph.get_operations() if op.type in ops] if tf_graph else []
    paths += re.findall(r'"([^"]+)"', text)
    layer_names = {layer.name for layer in model.layers}
    layers = []
    for name in paths:
        for part in re.split(r"[/@:]", name):
            # TF name scopes of a traced Keras call read "<model>_1/<layer>_1/<Op>".
            for candidate in (part, re.sub(r"_\d+$", "", part)):
                if candidate in layer_names and candidate not in layers:
                    layers.append(candidate)
                    break
    if ops:
        where = f" (in layer(s) {', '.join(layers)})" if layers else ""
        return (f"model {model.name!r} uses TensorFlow op(s) {', '.join(ops)}{where} that the "
                f"LiteRT builtin op set lacks ({quantization}); a plain Android runtime could "
                f"not run it. Replace the layer or rewrite it with supported ops; Flex "
                f"(Select TF) ops are deliberately not enabled.")
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()),
                 text.strip().splitlines()[0] if text.strip() else repr(error))
    return f"model {model.name!r} could not be converted to TFLite ({quantization}): {first}"


def calibration_function(images, batch_size=CALIBRATION_BATCH):
    """The converter's representative dataset: `images` (float32) in batches."""
    images = np.asarray(images, np.float32)

    def generate():
        for start in range(0, len(images), batch_size):
            yield [images[start:start + batch_size]]

    return generate
