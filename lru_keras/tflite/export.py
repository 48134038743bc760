"""`export(model, path, ...)`: a Keras model -> a .tflite an Android app can ship.

Steps: check the arguments and that `path` can be written (before the slow part,
`options`); build the export graph (`graph.export_model`: shared kernels once, GATHER-free
shuffles); calibrate (int8); convert with builtin ops only (`convert.convert`); tidy the
flatbuffer (`flatbuffer`: a bias buffer per reuse of a shared int8 kernel, no duplicate
constants, no unused tensors, batch 1 declared); check that no Flex/custom op slipped in and,
with `share_weights=True`, that every conv of a shared layer reads one weight tensor; run the
file with LiteRT and compare it with Keras (`verify`); add the standard TFLite metadata
(`metadata`: name, license, normalization, the labels as an associated file); write the
.tflite, `<stem>.labels.txt`
and `<stem>.json` (the input spec) atomically: each goes to a temporary file in the target folder
and is renamed into place only when all three are complete, so an error never leaves a partial
or stale set of files behind.
"""

import collections
import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from lru_keras import atomic, extras
from lru_keras.progress import Ticker
from lru_keras.tflite import (
    calibration_data,
    convert,
    equalization,
    flatbuffer,
    graph,
    metadata,
    micro,
    options,
    verify,
)
from lru_keras.tflite.errors import ExportError, UnsupportedModelError

SPEC_FORMAT = "lru_keras.tflite.spec/1"
# Calibration images an int8 file runs in TensorFlow Lite Micro against LiteRT's reference
# kernels (for 14-LruNet-1x, 4 s with the arena's bisection).
MICRO_IMAGES = 10


def export(model, path, quantization="float32", representative_data=None, *,
           share_weights=True, dataset=None, labels=None, calibration_size=None,
           equalize=None, ranges="mse", input_range=None, strip_names=True, data_dir=None,
           extra_spec=None, io_dtype=None, model_info=None, reuse_loops=False, verbose=None):
    """Converts a Keras classifier to a .tflite file; returns a dict describing it.

    Args:
        model: a functional or Sequential Keras model with one image input (any zoo model).
        path: the .tflite file to write; `<stem>.labels.txt` and `<stem>.json` go beside it.
        quantization: "float32"; "float16" (float16 weights); "dynamic" (int8 weights, float
            activations; tensors under 1024 elements stay float); "int8" (full integer, int8
            (or `io_dtype`) input and output, builtin int8 ops only, calibrated on
            `representative_data`).
        representative_data: int8 calibration images in [0, 255]: an array (n, H, W, C), a
            tf.data.Dataset or an iterable of batches (labels ignored). Default: training
            images of `dataset`. Not used by the other quantizations.
        share_weights: store each shared kernel once (per-reuse BatchNorms kept as
            multiply-adds). False: the plain conversion, which folds each reuse's BatchNorm
            into its own copy of the kernel.
        dataset: the dataset the model classifies (labels, default calibration images).
            Default: the one supported dataset with the model's input shape and class count,
            if exactly one fits.
        labels: class names (a list, one per output); default: the dataset's.
        calibration_size: how many images calibrate int8 (default 300).
        equalize: rescale shared kernels' output channels for int8 (see `calibration`);
            default True for int8 with share_weights, else False. Never changes the function.
        ranges: int8 activation ranges: "mse" (min/max refined to the least quantization
            error, the default) or "minmax" (the converter's plain calibration).
        input_range: (low, high) the model's input pixels span. Default: the range the model
            declares with its `PixelPreprocessing` layer (every zoo model built with
            include_preprocessing=True: (0, 255)); a model without one needs it.
        strip_names: blank internal tensor names (smaller file).
        data_dir: TFDS data directory for the default calibration images.
        extra_spec: more entries for the spec (e.g. how the weights were fine-tuned).
        io_dtype: int8 only: the input and output type, "int8" (default) or "uint8" (raw
            8-bit pixels in, as Android's Task Library and TensorBuffer take them).
        model_info: what the file's standard metadata says of the model: a mapping with any
            of "name", "description", "version", "author", "license" (a registered model's:
            `zoo.get_weights(name).model_info()`). Default: the model's name, what it
            classifies, and this package's version.
        reuse_loops: LRU blocks written as ONE loop over their N reuses (a WHILE op whose
            body holds one reuse; `LRUBlock.loop_export_call`) instead of N copies of their
            ops: False (none, the default), True (every LRU block) or a list of block names
            (`graph.loop_blocks(model)`). For TensorFlow Lite Micro: its arena holds per-op
            data (an int8 conv's per-channel requantization) for every op, so the unrolled
            form's RAM grows with N and the loop's does not (14-LruNet-1x int8: 565 KiB
            unrolled, 260 KiB with every block a loop, 209 KiB with stages 2-4). In int8
            every reuse shares one activation range per tensor of the body (chosen by the
            MSE refinement over the values of all reuses, `ranges.refine_ranges`) and one
            int8 table of BatchNorm scales; the converter does not quantize WHILE, so the
            loop-carried tensors stay float32, converted at the loop's ends
            (bench/micro_loops.py measures the accuracy of each form); XNNPACK does not take
            WHILE. Needs share_weights.
        verbose: progress lines on stderr (what is being done, at least every 10 s); default:
            for int8 (calibration and conversion take a minute or more), not for the others
            (seconds).

    Returns:
        the input spec written to `<stem>.json` (also embedded in the .tflite as metadata
        "lru_keras.spec"), with the file's size, sha256 and "verified": how it ran in LiteRT
        against Keras (`verify.verify`; an ExportError before anything is written if it does
        not run or disagrees; a warning naming the ops XNNPACK does not take). For int8, when
        the [micro] extra is installed, also "micro": the file's flash and smallest RAM arena
        in TensorFlow Lite Micro and the ops to register (`micro.report`), after checking
        that TFLM gives LiteRT's reference outputs (an ExportError if not; {"error",
        "missing_ops", ...} and a warning if TFLM cannot load the file, e.g. for lack of a
        GELU kernel: `micro.record`). With
        `reuse_loops`, "reuse_loops": the names of the blocks written as loops.
    """
    options.require_tensorflow_backend("the TFLite export")
    if quantization not in convert.QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r}; expected one of "
                         f"{list(convert.QUANTIZATIONS)}")
    if ranges not in convert.RANGES:
        raise ValueError(f"ranges={ranges!r}; expected one of {list(convert.RANGES)}")
    if io_dtype is not None and quantization != "int8":
        raise ValueError(f"io_dtype={io_dtype!r} needs quantization='int8' (the other "
                         f"quantizations take and return float32).")
    io_dtype = "int8" if io_dtype is None else io_dtype
    if io_dtype not in convert.IO_DTYPES:
        raise ValueError(f"io_dtype={io_dtype!r}; expected one of {list(convert.IO_DTYPES)}")
    path = Path(os.fspath(path))
    options.check_writable(path)
    extras.require_installed("ai_edge_litert")  # the file is verified with LiteRT
    import keras

    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"export needs a keras.Model, got {type(model).__name__}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError(
            f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} "
            f"outputs; export supports one image input and one output.")
    loops = graph.resolve_loops(model, reuse_loops, "reuse_loops")
    if loops and not share_weights:
        raise ValueError(f"reuse_loops={reuse_loops!r} needs share_weights=True: a loop reads "
                         f"one kernel at every reuse, the folded form a copy per reuse.")
    image_shape = tuple(model.inputs[0].shape[1:])
    outputs = model.outputs[0].shape[-1]
    dataset = options.resolve_dataset(dataset, image_shape, outputs)
    labels = options.resolve_labels(labels, dataset, outputs)
    input_range = options.resolve_input_range(model, input_range)
    info = options.resolve_model_info(model_info, model, dataset)
    verbose = quantization == "int8" if verbose is None else bool(verbose)
    equalize = (quantization == "int8" and share_weights) if equalize is None else bool(equalize)

    with Ticker("export", f"writing {path.name} ({quantization})", enabled=verbose) as ticker:
        images = pixels = None
        if quantization == "int8":
            ticker.say("reading the calibration images")
            pixels = calibration_data.calibration_images(
                representative_data, dataset=dataset, image_shape=image_shape,
                count=calibration_size, data_dir=data_dir)
            images = options.to_input_range(pixels, input_range)

        # Float files keep each BatchNorm as one 1x1 depthwise conv (fewer ops, same bytes);
        # quantized ones as MUL + ADD with per-tensor int8 constants (see graph.export_model).
        form = (graph.BN_DEPTHWISE if quantization in ("float32", "float16")
                else graph.BN_AFFINE_5D)
        ticker.say("building the export graph")
        export_graph = graph.export_model(
            model, share_weights=share_weights, form=form,
            equalize=equalization.equalization_factors if equalize else None,
            silence_dead=quantization in ("int8", "dynamic"), loops=loops or False)
        ticker.say(f"converting ({quantization}" + (
            f", calibrating on {len(images)} images)" if images is not None else ")"))
        content = convert.convert(export_graph, quantization, images, ranges=ranges,
                                  io_dtype=io_dtype)
        tflite = flatbuffer.read(content)
        flatbuffer.deduplicate_constants(tflite)
        flatbuffer.separate_shared_kernel_biases(tflite)
        flatbuffer.strip_unused(tflite)
        flatbuffer.strip_shape_signatures(tflite)
        if strip_names:
            flatbuffer.strip_names(tflite)
        flatbuffer.rename_io(tflite, "image", _output_name(model))
        check_ops(tflite, model.name, full_integer=quantization == "int8")
        sharing = sharing_report(tflite, export_graph)
        if share_weights and not sharing["all_shared"]:
            raise ExportError(
                f"model {model.name!r}: weight sharing was lost in the conversion: "
                f"{sharing['problems']}. Export with share_weights=False, or report the layer.")

        spec = _spec(model, path, quantization, share_weights, dataset, labels, input_range,
                     tflite, sharing)
        if quantization == "int8":
            spec["calibration"] = {
                "images": int(len(images)),
                "source": "representative_data" if representative_data is not None
                else f"{dataset}/train, evenly spaced",
                "equalized": equalize, "ranges": ranges}
        if loops:
            spec["reuse_loops"] = loops
        spec.update(extra_spec or {})
        flatbuffer.set_metadata(tflite, flatbuffer.METADATA_PREFIX + "spec",
                                json.dumps(spec, sort_keys=True).encode())
        labels_text = ("\n".join(labels) + "\n").encode()
        flatbuffer.set_metadata(tflite, flatbuffer.METADATA_PREFIX + "labels", labels_text)
        flatbuffer.set_metadata(tflite, metadata.FIELD_NAME, _standard_metadata(info, spec))
        content = metadata.append_associated_files(flatbuffer.write(tflite),
                                                   {metadata.LABELS_FILE: labels_text})
        ticker.say("running the file in LiteRT against Keras")
        spec = {**spec, "size_bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "verified": verify.verify(content, model, quantization, input_range, pixels)}
        if quantization == "int8" and extras.installed("tflite_micro"):
            ticker.say("running the file in TensorFlow Lite Micro")
            spec["micro"] = _micro_report(content, model, pixels)
        labels_path, spec_path = options.sidecar_paths(path)
        _write_all({path: content,
                    labels_path: labels_text,
                    spec_path: (json.dumps(spec, indent=1, sort_keys=True) + "\n").encode()})
    return spec


# ------------------------------------------------------------------------------------------
# Checks on the converted file.
# ------------------------------------------------------------------------------------------
def check_ops(tflite, name, full_integer):
    """ExportError if the file holds Flex (Select TF) or custom ops, which a plain LiteRT
    runtime cannot run, or, for a full-integer file, any float activation other than the
    state of a loop (`flatbuffer.loop_state`: the converter leaves WHILE in float)."""
    bad = flatbuffer.non_builtin_ops(tflite)
    left = (flatbuffer.float_activations(tflite, flatbuffer.loop_state(tflite))
            if full_integer else [])
    if bad:
        raise ExportError(
            f"model {name!r}: the converted file contains non-builtin ops {bad}, which a plain "
            f"LiteRT runtime (e.g. Android without the Flex delegate) cannot run.")
    if left:
        raise ExportError(
            f"model {name!r}: the int8 export left {len(left)} float tensors ({left[:5]}...): "
            f"some op has no int8 kernel. Export float16 or dynamic instead.")


def sharing_report(tflite, export_graph=None):
    """How the conv weights of the file are shared, over all its subgraphs.

    Returns {"weights": [{shape, reads}], "reads_by_shape": {...}, "all_shared": bool,
    "problems": [...]}: for each reuse block of `export_graph` with N reuses, each of its
    kernels must be ONE tensor read by N conv ops (shapes in TFLite layout); a block exported
    as a loop reads each kernel with one op of the loop's body, whatever N is.
    """
    rows = flatbuffer.conv_weights(tflite)
    reads = collections.Counter((row[0], row[3]) for row in rows)  # (subgraph, tensor)
    shapes = {(row[0], row[3]): row[4] for row in rows}
    by_shape = collections.defaultdict(list)
    for tensor, count in reads.items():
        by_shape[shapes[tensor]].append(count)
    problems = []
    expected = []  # (layer name, TFLite kernel shape, calls)
    if export_graph is not None:
        for layer in graph.all_layers(export_graph):
            constants = getattr(layer, "constants", None)
            if isinstance(layer, graph.ExportedLayer) and constants is not None:
                calls = 1 if layer.loop else layer.times
                expected += [(layer.name, shape, calls)
                             for shape in constants.tflite_kernel_shapes().values()]
        for layer, calls in graph.shared_layers(export_graph).items():
            shape = _tflite_shape(layer)
            if shape is not None:
                expected.append((layer.name, shape, calls))
    for name, shape, calls in expected:
        counts = by_shape.get(shape, [])
        if calls > 1 and max(counts, default=0) < calls:
            problems.append(
                f"{name}: kernel {shape} is stored {len(counts)} times, read "
                f"{sorted(counts, reverse=True)} times (expected one tensor read {calls} times)")
    return {
        "conv_ops": len(rows),
        "weight_tensors": len(reads),
        "reads_by_shape": {"x".join(map(str, s)): sorted(c, reverse=True)
                           for s, c in sorted(by_shape.items())},
        "all_shared": not problems,
        "problems": problems,
    }


def _tflite_shape(layer):
    """The TFLite weight shape of a Keras conv/dense layer's kernel (None if it has none)."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None or not graph.is_conv_like(layer):
        return None
    shape = tuple(int(d) for d in kernel.shape)
    depthwise = any(c.__name__ == "DepthwiseConv2D" for c in type(layer).__mro__)
    if len(shape) == 4 and depthwise:
        return (1, shape[0], shape[1], shape[2] * shape[3])
    if len(shape) == 4:
        return (shape[3], shape[0], shape[1], shape[2])
    if len(shape) == 2:
        return (shape[1], shape[0])
    return None


def _micro_report(content, model, pixels):
    """`micro.record` on a few calibration images, with a warning if TFLM cannot load the
    file; an ExportError if it computes otherwise than LiteRT's reference kernels."""
    try:
        recorded = micro.record(content, pixels[:MICRO_IMAGES])
    except (RuntimeError, ValueError) as error:
        raise ExportError(f"model {model.name!r}: the int8 file does not run correctly in "
                          f"TensorFlow Lite Micro: {error}") from None
    if "error" in recorded:
        # A file for phones may use ops TFLM has no kernel for: said, not refused.
        warnings.warn(f"model {model.name!r}: the int8 file will not run on a microcontroller: "
                      f"{recorded['error']}", stacklevel=3)
    return recorded


# ------------------------------------------------------------------------------------------
# The spec, and writing.
# ------------------------------------------------------------------------------------------
def _spec(model, path, quantization, share_weights, dataset, labels, input_range, tflite,
          sharing):
    graph_ = tflite.subgraphs[0]
    tin = graph_.tensors[int(graph_.inputs[0])]
    tout = graph_.tensors[int(graph_.outputs[0])]
    height, width, channels = (int(d) for d in tin.shape[1:])

    def tensor_spec(tensor):
        item = {"name": flatbuffer._text(tensor.name) or "",
                "shape": [1, *(int(d) for d in tensor.shape[1:])],
                "dtype": flatbuffer.type_name(tensor.type)}
        q = tensor.quantization
        if q is not None and q.scale is not None and len(q.scale):
            item["scale"] = float(q.scale[0])
            item["zero_point"] = int(q.zeroPoint[0])
        return item

    inp, out = tensor_spec(tin), tensor_spec(tout)
    low, high = input_range
    inp.update({
        "layout": "NHWC", "pixel_range": [low, high],
        "color": {1: "grayscale", 3: "RGB"}.get(channels, f"{channels} channels"),
        "height": height, "width": width, "channels": channels,
    })
    if "scale" in inp:
        smallest, largest = np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max
        inp["quantize"] = f"q = clamp(round(pixel / scale) + zero_point, {smallest}, {largest})"
        if (low, high) == (0.0, 255.0) and abs(inp["scale"] - 1.0) < 1e-6:
            inp["quantize"] += (" = pixel for 8-bit pixels" if inp["zero_point"] == 0 else
                                f" = pixel {inp['zero_point']:+d} for 8-bit pixels")
    out["meaning"] = _output_meaning(model)
    if "scale" in out:
        out["dequantize"] = "value = (q - zero_point) * scale"
    return {
        "format": SPEC_FORMAT,
        "file": path.name,
        "model": model.name,
        "dataset": dataset,
        "labels_file": options.sidecar_paths(path)[0].name,
        "classes": len(labels),
        "quantization": quantization,
        "share_weights": bool(share_weights),
        "input": inp,
        "output": out,
        "ops": flatbuffer.op_counts(tflite),
        "conv_weight_tensors": sharing["weight_tensors"],
        "conv_ops": sharing["conv_ops"],
        "runtime": "LiteRT builtin ops only (no Flex, no custom ops)",
    }


def _standard_metadata(info, spec):
    """The TFLITE_METADATA flatbuffer of an exported file, from its spec."""
    inp, out = spec["input"], spec["output"]
    low, high = inp["pixel_range"]
    return metadata.build(
        info, channels=inp["channels"], input_range=(low, high),
        input_description=f"{inp['color']} image, {inp['height']}x{inp['width']} pixels "
                          f"(NHWC, batch 1); 8-bit pixels [0, 255] normalized to "
                          f"[{low:g}, {high:g}] as the normalization says",
        output_name=out["name"], output_description=out["meaning"],
        probabilities="softmax" in out["meaning"])


def _output_name(model):
    return "probabilities" if "softmax" in _output_meaning(model) else "scores"


def _output_meaning(model):
    import keras

    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax":
        return "class probabilities (softmax), one per line of the labels file"
    return "class scores (argmax = predicted class), one per line of the labels file"


def _write_all(files):
    """Writes every {path: bytes} atomically (`lru_keras.atomic`); the first path (the
    .tflite) is renamed into place last, so a reader never sees a new model with old sidecars,
    and an error before that leaves the old files as they were."""
    with contextlib.ExitStack() as stack:
        for target, content in files.items():  # entered first, published last
            temporary = stack.enter_context(atomic.replacing(target))
            atomic.write_synced(temporary, content)
