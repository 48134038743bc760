"""Running a .tflite classifier with LiteRT's interpreter (`ai_edge_litert`), on real data.

`tf.lite.Interpreter` is deprecated; `ai_edge_litert.interpreter.Interpreter` gives the same
results and applies the XNNPACK delegate by default. Images come
in as the datasets deliver them (float32 pixels in [0, 255]; NaN, infinite or out-of-range
pixels are refused); `TFLiteClassifier` maps them to the model's input range and dtype (the
int8 scale and zero point are read from the model), and returns float scores (int8 outputs
dequantized). A damaged file is refused naming it (`read_model_file`), never run.
"""

import json
import os
import time

import numpy as np

from lru_keras import checksums, data, extras
from lru_keras.data import pipeline
from lru_keras.evaluate import evaluate_batches
from lru_keras.tflite import flatbuffer, options
from lru_keras.validation import require_int, require_positive_int

DEFAULT_PIXEL_RANGE = pipeline.PIXEL_RANGE


class TFLiteClassifier:
    """A .tflite image classifier: `predict(images)` -> float scores (batch, classes).

    Args:
        model: path of a .tflite file (read with `read_model_file`, which checks it), or
            its bytes.
        num_threads: interpreter threads (None: 1).
        xnnpack: apply the XNNPACK delegate (LiteRT's default CPU path); False runs the
            builtin kernels only.
        batch_size: batch the interpreter is resized to (the file stores batch 1).
    """

    def __init__(self, model, num_threads=None, xnnpack=True, batch_size=1):
        if isinstance(model, (bytes, bytearray)):
            content, self.name, source = bytes(model), "model.tflite", "the .tflite bytes given"
        else:
            content = read_model_file(model)
            self.name = os.path.basename(os.fspath(model))
            source = f"TFLite model file {os.fspath(model)!r}"
        try:  # the flatbuffer's checks, then LiteRT's own (ValueError or RuntimeError)
            self._load(content, num_threads, xnnpack, batch_size)
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{source} is not a usable TFLite classifier: {error}") from None

    def _load(self, content, num_threads, xnnpack, batch_size):
        """Reads the file's spec, makes the interpreter and sizes it for `batch_size`."""
        extras.require_installed("ai_edge_litert")
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.spec = flatbuffer.read_metadata_json(content) or {}
        resolver = (OpResolverType.AUTO if xnnpack
                    else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter = Interpreter(model_content=content, num_threads=num_threads or 1,
                                       experimental_op_resolver_type=resolver)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"expected one input and one output, got {len(inputs)} and "
                             f"{len(outputs)}.")
        self.input, self.output = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])
        self.input_dtype = np.dtype(self.input["dtype"])
        self.pixel_range = tuple(self.spec.get("input", {}).get("pixel_range",
                                                                DEFAULT_PIXEL_RANGE))
        self.classes = int(self.output["shape"][-1])
        self.batch_size = None
        self._resize(batch_size)

    def _resize(self, batch_size):
        if batch_size != self.batch_size:
            self.interpreter.resize_tensor_input(self.input["index"],
                                                 [batch_size, *self.input_shape])
            self.interpreter.allocate_tensors()
            self.batch_size = batch_size

    def quantize_input(self, images):
        """Float pixels in [0, 255] -> what the model's input takes (range and dtype);
        ValueError for non-finite pixels or pixels outside [0, 255] (`check_pixels`)."""
        x = np.asarray(pipeline.check_pixels(images, "images"), np.float32)
        low, high = self.pixel_range
        if (low, high) != DEFAULT_PIXEL_RANGE:
            x = x * ((high - low) / 255.0) + low
        if self.input_dtype == np.float32:
            return x
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(self.input_dtype)
        q = np.round(x / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def dequantize_output(self, scores):
        """Raw output -> float scores."""
        if np.issubdtype(scores.dtype, np.floating):
            return scores.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return (scores.astype(np.float32) - zero_point) * scale

    def predict_raw(self, inputs):
        """Runs one batch already in the model's input dtype; returns the raw output."""
        self._resize(len(inputs))
        self.interpreter.set_tensor(self.input["index"], inputs)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def predict(self, images):
        """Float scores for float pixels in [0, 255] (any batch size)."""
        return self.dequantize_output(self.predict_raw(self.quantize_input(images)))

    predict_on_batch = predict  # Keras's name, so that `evaluate_batches` runs it as a model

    def check_images(self, image_shape, what):
        """ValueError unless images of `image_shape` fit the model's input."""
        if tuple(image_shape) != self.input_shape:
            raise ValueError(f"{self.name} takes images of shape {self.input_shape}, but {what} "
                             f"images have shape {tuple(image_shape)}.")


def evaluate(path, dataset, split="test", *, batch_size=100, limit=None, num_threads=None,
             xnnpack=True, data_dir=None, progress=True):
    """Top-1 accuracy of a .tflite classifier on a prepared dataset split, with a progress bar.

    Raises ValueError if the model's input shape or class count does not fit the dataset,
    `lru_keras.data.DatasetNotAvailableError` if the split is not prepared. Returns {model,
    dataset, split, images, correct, accuracy (percent), seconds, images_per_second,
    quantization}, like `lru_keras.evaluate.evaluate_dataset`. `num_threads` None: one
    interpreter thread per core this process may use (scoring a test set is throughput work;
    the int8 and float kernels give the same scores with any thread count).
    """
    classifier = TFLiteClassifier(path, num_threads=_all_cores(num_threads), xnnpack=xnnpack,
                                  batch_size=require_positive_int("batch_size", batch_size))
    spec = data.info(dataset)
    classifier.check_images(spec.image_shape, dataset)
    _check_classes(classifier, spec)
    total = data.split_size(dataset, split, data_dir)
    total = total if limit is None else min(total, require_positive_int("limit", limit))
    batches = data.load(dataset, split, batch_size=batch_size, data_dir=data_dir)
    return _run(classifier, batches.as_numpy_iterator(), total, dataset, split, progress)


def evaluate_arrays(path, images, labels, *, dataset="arrays", split="given", batch_size=100,
                    num_threads=None, xnnpack=True, progress=True):
    """Top-1 accuracy of a .tflite classifier on in-memory images (pixels 0..255) and labels
    (`num_threads` None: every core, as `evaluate`)."""
    classifier = TFLiteClassifier(path, num_threads=_all_cores(num_threads), xnnpack=xnnpack,
                                  batch_size=require_positive_int("batch_size", batch_size))
    images, labels = np.asarray(images), np.asarray(labels)
    if not len(labels):
        raise ValueError("evaluate_arrays: no images given")
    classifier.check_images(images.shape[1:], dataset)
    pipeline.check_pixels(images, "images")  # all of them before the first batch runs
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be {len(images)} integers, one per image; got "
                         f"{labels.dtype} of shape {labels.shape}.")
    if labels.min() < 0 or labels.max() >= classifier.classes:
        raise ValueError(f"labels must be classes in 0..{classifier.classes - 1}; got "
                         f"{labels.min()}..{labels.max()}.")
    if dataset in data.DATASETS:
        _check_classes(classifier, data.info(dataset))
    batches = ((images[i:i + batch_size], labels[i:i + batch_size])
               for i in range(0, len(labels), batch_size))
    return _run(classifier, batches, len(labels), dataset, split, progress)


def read_model_file(path):
    """The bytes of a .tflite file; ValueError naming it if it is missing or not a file, or
    if its bytes differ from the sha256 recorded beside it: in a `.sha256` sidecar, or in the
    spec `<stem>.json` that `lru_keras.tflite.export` writes with it (a flipped byte in a
    kernel still loads and silently changes the predictions)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"TFLite model file {path!r} "
                         f"{'is not a file' if os.path.exists(path) else 'does not exist'}.")
    checksums.check_sidecar(path, "TFLite model file")
    spec_path = options.sidecar_paths(path)[1]
    recorded = _recorded_spec(spec_path)
    if recorded.get("file") == os.path.basename(path) and "sha256" in recorded:
        try:
            checksums.check(path, recorded["sha256"], "TFLite model file")
        except checksums.ChecksumError as error:
            raise checksums.ChecksumError(
                f"{error} (The sha256 is recorded in {spec_path}, written with the file by its "
                f"export: export the model again.)") from None
    with open(path, "rb") as f:
        return f.read()


def _recorded_spec(spec_path):
    """The export's spec beside a .tflite ({} if there is none, or it is not such a spec)."""
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def compiled_model_outputs(path, inputs, *, weight_cache=None, num_threads=1):
    """Raw outputs of a .tflite run by LiteRT's CompiledModel API on the CPU, as apps run it.

    Args:
        path: the .tflite file.
        inputs: raw input tensors, already in the model's input dtype (e.g. from
            `TFLiteClassifier.quantize_input`), one image per row; run one at a time.
        weight_cache: None, or the file XNNPACK's weight cache is written to on first use and
            reloaded from afterwards (`CpuOptions(xnnpack_weight_cache_path=...)`, what
            Android apps enable to start faster).
        num_threads: CPU threads.
    """
    extras.require_installed("ai_edge_litert")
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.cpu_options import CpuOptions
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    options = Options(hardware_accelerators=HardwareAccelerator.CPU,
                      cpu_options=CpuOptions(num_threads=num_threads,
                                             xnnpack_weight_cache_path=os.fspath(
                                                 weight_cache or "")))
    model = CompiledModel.from_file(os.fspath(path), options=options)
    inputs_buffers, output_buffers = model.create_input_buffers(0), model.create_output_buffers(0)
    output = model.get_output_tensor_details(model.get_signature_by_index(0)["key"])
    details = next(iter(output.values()))
    dtype, size = np.dtype(details["dtype"]), int(np.prod(details["shape"]))
    rows = []
    for row in np.asarray(inputs):
        inputs_buffers[0].write(row[None])
        model.run_by_index(0, inputs_buffers, output_buffers)
        rows.append(np.asarray(output_buffers[0].read(size, dtype)).reshape(details["shape"]))
    return np.concatenate(rows)


def _all_cores(num_threads):
    return len(os.sched_getaffinity(0)) if num_threads is None else num_threads


def _run(classifier, batches, total, dataset, split, progress):
    """The pass of `lru_keras.evaluate.evaluate_batches` (the Keras models' one), plus the
    file's quantization."""
    result = evaluate_batches(classifier, batches, total, dataset=dataset, split=split,
                              progress=progress)
    return {**result, "quantization": classifier.spec.get("quantization")}


def _check_classes(classifier, spec):
    if classifier.classes != spec.num_classes:
        raise ValueError(f"{classifier.name} predicts {classifier.classes} classes, but "
                         f"{spec.name} has {spec.num_classes}.")


def latency(model, *, num_threads=1, runs=200, warmup=20, xnnpack=True):
    """Batch-1 latency of a .tflite (path or bytes) with LiteRT's interpreter, in ms.

    Feeds one real-looking constant image (mid-gray) each run; returns {median_ms, min_ms,
    p90_ms, runs, num_threads, xnnpack, xnnpack_partitions}. `xnnpack_partitions` counts the
    delegate nodes XNNPACK put in the graph (1 = the whole graph in one partition; 0 = off).
    On a shared machine the median moves with the load; the minimum much less.
    """
    return latencies([model], num_threads=num_threads, runs=runs, warmup=warmup,
                     xnnpack=xnnpack)[0]


def latencies(models, *, num_threads=1, runs=200, warmup=20, xnnpack=True):
    """Batch-1 latencies of several .tflite files (paths or bytes), measured interleaved, so
    that they compare on a shared machine: every interpreter is made first, then each round
    runs every model once, starting one model later each round; the first `warmup` rounds
    are not timed. The load of other jobs then falls on all models alike.

    Returns one dict per model, in order, as `latency` does for one.
    """
    runs, warmup = require_positive_int("runs", runs), require_int("warmup", warmup)
    classifiers = [_ready_to_time(model, num_threads, xnnpack) for model in models]
    if not classifiers:
        raise ValueError("latencies: no models given")
    count = len(classifiers)
    times = np.zeros((count, runs))
    for round_ in range(-warmup, runs):
        first = round_ % count
        for index in (*range(first, count), *range(first)):
            interpreter = classifiers[index].interpreter
            start = time.perf_counter()
            interpreter.invoke()
            if round_ >= 0:
                times[index, round_] = time.perf_counter() - start
    return [{
        "median_ms": float(np.median(row)), "min_ms": float(row.min()),
        "p90_ms": float(np.percentile(row, 90)), "runs": runs, "num_threads": num_threads,
        "xnnpack": xnnpack, "xnnpack_partitions": delegate_partitions(classifier),
    } for classifier, row in zip(classifiers, times * 1e3)]


def _ready_to_time(model, num_threads, xnnpack):
    """A batch-1 `TFLiteClassifier` of `model` whose input holds one mid-gray image, so that
    timing it is `classifier.interpreter.invoke()` alone."""
    classifier = TFLiteClassifier(model, num_threads=num_threads, xnnpack=xnnpack, batch_size=1)
    image = classifier.quantize_input(np.full((1, *classifier.input_shape), 128.0, np.float32))
    classifier.interpreter.set_tensor(classifier.input["index"], image)
    return classifier


def delegate_partitions(classifier):
    """Delegate nodes in the interpreter's graph (after the first invoke): the partitions."""
    wrapper = classifier.interpreter._interpreter  # noqa: SLF001  (no public API for this)
    return sum(wrapper.NodeName(i) == "DELEGATE" for i in range(wrapper.NumNodes()))


def undelegated_ops(classifier):
    """Names of the ops XNNPACK left to LiteRT's own kernels, in graph order: each one splits
    the delegated graph and runs slower.

    The interpreter lists the file's ops and, after them, one DELEGATE node per partition,
    but not which ops each partition replaced; that follows from the tensors. An op whose
    output leaves a partition (a DELEGATE node's output) was delegated; one whose output
    enters a partition or is a graph output (and leaves none) was not; any other op is what
    its consumers are (a delegated op feeds an undelegated one only through a DELEGATE
    output), so the ops are classified from the last to the first.
    """
    wrapper = classifier.interpreter._interpreter  # noqa: SLF001  (no public API for this)
    nodes = [(wrapper.NodeName(i), set(wrapper.NodeInputs(i)), set(wrapper.NodeOutputs(i)))
             for i in range(wrapper.NumNodes())]
    ops = [node for node in nodes if node[0] != "DELEGATE"]
    partitions = [node for node in nodes if node[0] == "DELEGATE"]
    leaving = set().union(*(outputs for _, _, outputs in partitions))
    entering = set().union(*(inputs for _, inputs, _ in partitions), wrapper.OutputIndices())
    delegated = {}  # tensor -> whether the ops reading it were delegated
    undelegated = []
    for name, inputs, outputs in reversed(ops):
        if outputs & leaving:
            kept = False
        elif outputs & entering:
            kept = True
        else:
            kept = any(delegated.get(t) is False for t in outputs) or not partitions
        for tensor in inputs:
            delegated.setdefault(tensor, not kept)
        if kept:
            undelegated.append(name)
    return undelegated[::-1]
