"""int8 calibration: which images the converter measures ranges on, and equalization.

Representative images are training images by default: `calibration_images(dataset=...)` takes
`count` images evenly spread over the prepared training split (the imported CIFAR rows are
sorted by class, so the first few hundred would all be airplanes). A user can pass arrays, a
`tf.data.Dataset` or any iterable of batches instead; images (not labels) are taken, in the
pixel range the datasets use, [0, 255].

Equalization (`equalize_lru_block`): full-integer int8 gives every activation tensor ONE scale.
In a reuse block the output of a shared conv has a different BatchNorm at every reuse, and its
channels' ranges before that BatchNorm differ strongly (per reuse, the largest channel standard
deviation of a depthwise output is 20-100x the smallest in 14-LruNet-1x), so small channels get
few int8 levels. Each output channel c of a shared kernel is therefore multiplied by a factor
s_c and every reuse's BatchNorm scale divided by s_c: the function is unchanged, the kernel is
still stored once, and channel ranges come closer together. s_c = 1 / max over reuses of the
channel's range, estimated from the BatchNorm's own moving statistics (|mean| + 4 std of the
conv output).

Activation ranges (`refine_ranges`): the converter's min/max, then per tensor the range with
the least int8 quantization error (an outlier no longer sets the step for everyone).

Measured on 14-LruNet-1x, CIFAR-10 test set (float 89.34%), kernels shared; "agree" = share of
test images whose int8 prediction equals the Keras prediction (steadier than accuracy):

| ranges  | equalization               | accuracy | agree  |
|---------|----------------------------|----------|--------|
| min/max | none                       | 88.36    | 95.46  |
| min/max | max range (this module)    | 88.57    | 95.89  |
| 99.99%  | max range                  | 88.76    | 96.48  |
| MSE     | none                       | 88.81    | 96.78  |
| MSE     | geometric mean of BN scale | 88.76    | 96.58  |
| MSE     | max range (the default)    | 88.90    | 97.11  |
| (plain folded conversion, MSE)       | 89.04    | 98.00  |

(Measured before the final graph: tiled depthwise conv, split/concat shuffle, and dead
BatchNorm channels silenced, `graph.silence_dead_channels`; with all of these the default
export scores 89.01, the folded one 88.98.) The dead channels mattered most on
10-LruNet-1x / Fashion-MNIST: 87.74% int8 (Keras 93.46) before, 92.86 after (folded: 93.37).

Tried and dropped: a per-reuse rescale of the block input before the shared depthwise conv
(81.5%: the rescaled input itself quantizes badly), equalizing the grouped conv's input
channels (88.19% with min/max), bias correction of the per-reuse offsets for the weight
rounding error (88.75% vs 88.99% with min/max).
"""

import numpy as np

from lru_keras import data

# Measured on 14-LruNet-1x (kernels shared, equalized, MSE ranges; CIFAR-10 test accuracy,
# two different evenly spaced image sets each): 200 images 88.91; 300 images 89.05 / 88.99;
# 500 images 88.75 / 88.80. More images did not help, so the default is 300.
DEFAULT_CALIBRATION_SIZE = 300
RANGE_STDS = 4.0  # a channel's range: |mean| + RANGE_STDS * std, from BatchNorm statistics


def calibration_images(representative_data=None, *, dataset=None, image_shape, count=None,
                       data_dir=None):
    """float32 images (n, H, W, C) in [0, 255] to calibrate int8 on.

    Args:
        representative_data: None (use `dataset`'s training split), an array of images
            (n, H, W, C) or one image (H, W, C), a `tf.data.Dataset` or an iterable yielding
            images or batches of images, or (images, labels) pairs.
        dataset: the dataset to take training images from when `representative_data` is None.
        image_shape: the model's input shape (H, W, C); other shapes are refused.
        count: images to use (default DEFAULT_CALIBRATION_SIZE); user data is cut to it.
    """
    count = DEFAULT_CALIBRATION_SIZE if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"calibration_size={count!r} must be a positive integer")
    image_shape = tuple(image_shape)
    if representative_data is None:
        if dataset is None:
            raise ValueError(
                "int8 quantization needs calibration images: pass representative_data= "
                "(images as an array, a tf.data.Dataset or batches) or dataset= (one of "
                f"{sorted(data.DATASETS)}, whose training images are used); this model's "
                "dataset is not known.")
        spec = data.info(dataset)
        if tuple(spec.image_shape) != image_shape:
            raise ValueError(
                f"dataset {dataset!r} has images of shape {tuple(spec.image_shape)}, but the "
                f"model takes {image_shape}; calibrate on the model's own dataset or pass "
                f"representative_data.")
        return spread_training_images(dataset, count, data_dir)
    images = _collect(representative_data, count, len(image_shape))
    if images.ndim != len(image_shape) + 1 or tuple(images.shape[1:]) != image_shape:
        raise ValueError(
            f"representative_data images have shape {tuple(images.shape[1:])}, but the model "
            f"takes {image_shape}.")
    if len(images) == 0:
        raise ValueError("representative_data holds no images")
    if not np.all(np.isfinite(images)):
        raise ValueError("representative_data contains NaN or infinite values")
    return images[:count]


def spread_training_images(dataset, count, data_dir=None, split="train"):
    """`count` images at evenly spaced positions of a prepared split (float32, [0, 255])."""
    total = data.split_size(dataset, split, data_dir)
    count = min(count, total)
    wanted = np.linspace(0, total - 1, count).round().astype(np.int64)
    chunks, position = [], 0
    for images, _ in data.load(dataset, split, batch_size=1000,
                               data_dir=data_dir).as_numpy_iterator():
        index = wanted[(wanted >= position) & (wanted < position + len(images))] - position
        if len(index):
            chunks.append(images[index])
        position += len(images)
        if position > wanted[-1]:
            break
    return np.concatenate(chunks).astype(np.float32)


def _collect(source, count, rank):
    """Images (rank+1-D float32) from arrays, a tf.data.Dataset or an iterable of images or
    batches (an element may be (images, labels) or a dict with "image"), up to `count`."""
    if isinstance(source, (tuple, list)) and len(source) == 2 and np.ndim(source[1]) <= 1 \
            and np.ndim(source[0]) == rank + 1:
        source = source[0]  # (images, labels)
    if isinstance(source, np.ndarray) or (hasattr(source, "__array__")
                                          and not hasattr(source, "as_numpy_iterator")):
        images = np.asarray(source, np.float32)
        return images[None] if images.ndim == rank else images
    items = source.as_numpy_iterator() if hasattr(source, "as_numpy_iterator") else source
    try:
        items = iter(items)
    except TypeError:
        raise ValueError(
            f"representative_data must be an array of images, a tf.data.Dataset or an "
            f"iterable of image batches; got {type(source).__name__}.") from None
    chunks, total = [], 0
    for item in items:
        if isinstance(item, dict):
            item = item["image"] if "image" in item else next(iter(item.values()))
        if isinstance(item, (tuple, list)):
            item = item[0]
        array = np.asarray(item, np.float32)
        array = array[None] if array.ndim == rank else array
        chunks.append(array)
        total += len(array)
        if total >= count:
            break
    if not chunks:
        raise ValueError("representative_data yielded no images")
    if len({chunk.shape[1:] for chunk in chunks}) > 1 or chunks[0].ndim != rank + 1:
        shapes = sorted({chunk.shape for chunk in chunks})
        raise ValueError(f"representative_data yielded arrays of shapes {shapes}; expected "
                         f"images of rank {rank} or batches of them.")
    return np.concatenate(chunks)


# ------------------------------------------------------------------------------------------
# Equalization of shared kernels (int8).
# ------------------------------------------------------------------------------------------
def _channel_ranges(block, position):
    """(reuses, channels): |moving mean| + RANGE_STDS * std of a shared conv's output."""
    ranges = []
    for i in range(block.times):
        norm = block.norm(i, position)
        mean = np.asarray(norm.moving_mean, np.float64)
        std = np.sqrt(np.asarray(norm.moving_variance, np.float64) + norm.epsilon)
        ranges.append(np.abs(mean) + RANGE_STDS * std)
    return np.stack(ranges)


def _normalized(factors):
    factors = np.where(np.isfinite(factors) & (factors > 0), factors, 1.0)
    return factors / np.exp(np.log(factors).mean())


def equalize_lru_block(block, dw, pw, norms):
    """Rescales the output channels of an LRU block's shared kernels (see the module doc).

    `dw` (k, k, C, M) and `pw` (1, 1, M*C/groups, C) are the kernels, `norms` the per-reuse
    ((dw scale, dw offset), (pw scale, pw offset)) pairs; returns them rescaled, same function.
    """
    s = _normalized(1.0 / _channel_ranges(block, 0).max(axis=0))   # per dw output channel
    t = _normalized(1.0 / _channel_ranges(block, 1).max(axis=0))   # per pw output channel
    shape = dw.shape
    dw = (dw.reshape(shape[0], shape[1], -1) * s).reshape(shape)
    pw = pw * t
    norms = [((a / s, b), (g / t, h)) for (a, b), (g, h) in norms]
    return dw, pw, norms


# ------------------------------------------------------------------------------------------
# Activation ranges (int8): min/max, refined to the range with the least quantization error.
# ------------------------------------------------------------------------------------------
RANGE_SHRINK_GRID = np.linspace(0.15, 1.0, 35)  # candidate ranges: fraction of min/max
HISTOGRAM_BINS = 2048
SAMPLES_PER_BATCH = 4096  # activation values per tensor and calibration batch


def refine_ranges(calibrated, images, batch_size=10):
    """Replaces the min/max ranges a calibrated .tflite records with MSE-optimal ones.

    `calibrated` is the converter's calibrate-only output: the float model with each activation
    tensor's observed [min, max] in its quantization fields. With plain min/max one outlier
    image widens a range for all (a 14-reuse model calibrated on 1,000 images scored lower
    than on 300). Here each tensor's values on `images` are histogrammed over [min, max] and
    the range [a*min, a*max] (a in RANGE_SHRINK_GRID) with the least int8 quantization mean
    squared error is kept. The model input and the tensors feeding SOFTMAX (logits) keep
    their full range. Returns (the calibrated model bytes with new ranges, number changed).

    (Tried and dropped: weighting each value's error by the square of the BatchNorm scale
    applied next, so that the small channels a BatchNorm amplifies get finer steps: the
    ranges shrank until the large channels clipped, 82% instead of 88.9% on CIFAR-10.)
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from lru_keras.tflite import flatbuffer

    model = flatbuffer.read(calibrated)
    graph = model.subgraphs[0]
    keep = set(int(t) for t in graph.inputs) | set(int(t) for t in graph.outputs)
    for op in flatbuffer.operators(model):
        if op.name == "SOFTMAX":
            keep.update(op.inputs)
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if (index not in keep and q is not None and q.min is not None and len(q.min) == 1
                and float(q.max[0]) > float(q.min[0])):
            ranges[index] = (float(q.min[0]), float(q.max[0]))
    if not ranges:
        return calibrated, 0
    interpreter = Interpreter(
        model_content=bytes(calibrated), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    entry = interpreter.get_input_details()[0]
    histograms = {index: np.zeros(HISTOGRAM_BINS) for index in ranges}
    shape = tuple(int(d) for d in entry["shape"][1:])
    rng = np.random.default_rng(0)  # fixed: the same images give the same file
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size], np.float32)
        interpreter.resize_tensor_input(entry["index"], [len(batch), *shape])
        interpreter.allocate_tensors()
        interpreter.set_tensor(entry["index"], batch)
        interpreter.invoke()
        for index, (low, high) in ranges.items():
            values = interpreter.get_tensor(index).reshape(-1)
            if values.size > SAMPLES_PER_BATCH:  # a random sample: a stride would pick
                values = values[rng.integers(0, values.size, SAMPLES_PER_BATCH)]  # channels
            histograms[index] += np.histogram(values, HISTOGRAM_BINS, (low, high))[0]
    chosen = {}
    for index, (low, high) in ranges.items():
        a = _best_shrink(histograms[index], low, high)
        chosen[index] = (low * a, high * a)
    # Ops that move values without computing (RESHAPE, TRANSPOSE, CONCATENATION, ...) need
    # the same int8 scale on their inputs and outputs; tensors they connect get one range, the
    # widest any of them chose (otherwise the quantizer leaves such ops in float).
    for group in _same_scale_groups(model, ranges):
        low = min(chosen[t][0] for t in group)
        high = max(chosen[t][1] for t in group)
        for t in group:
            chosen[t] = (low, high)
    changed = 0
    for index, (low, high) in chosen.items():
        if (low, high) != ranges[index]:
            q = graph.tensors[index].quantization
            q.min = np.array([low], np.float32)
            q.max = np.array([high], np.float32)
            changed += 1
    return flatbuffer.write(model), changed


SAME_SCALE_OPS = ("RESHAPE", "TRANSPOSE", "CONCATENATION", "SPLIT", "SPLIT_V", "SLICE",
                  "STRIDED_SLICE", "PAD", "MAX_POOL_2D", "SQUEEZE", "EXPAND_DIMS", "PACK",
                  "UNPACK", "GATHER", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH")


def _same_scale_groups(model, ranges):
    """Sets of activation tensors joined by ops that need one scale on inputs and outputs."""
    from lru_keras.tflite import flatbuffer

    parent = {t: t for t in ranges}

    def find(t):
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for op in flatbuffer.operators(model):
        if op.name not in SAME_SCALE_OPS:
            continue
        members = [t for t in (*op.inputs, *op.outputs) if t in ranges]
        for t in members[1:]:
            parent[find(t)] = find(members[0])
    groups = {}
    for t in ranges:
        groups.setdefault(find(t), []).append(t)
    return [g for g in groups.values() if len(g) > 1]


def _best_shrink(histogram, low, high):
    """The fraction a of [low, high] whose int8 quantization has the least squared error."""
    total = histogram.sum()
    if total == 0:
        return 1.0
    edges = np.linspace(low, high, len(histogram) + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    weights = histogram / total
    best, best_error = 1.0, None
    for a in RANGE_SHRINK_GRID:
        lo, hi = min(low * a, 0.0), max(high * a, 0.0)
        scale = (hi - lo) / 255.0
        if scale <= 0:
            continue
        zero_point = np.round(-128 - lo / scale)
        q = np.clip(np.round(centers / scale) + zero_point, -128, 127)
        error = float(np.sum(weights * ((q - zero_point) * scale - centers) ** 2))
        if best_error is None or error < best_error - 1e-12 * abs(best_error):
            best, best_error = float(a), error
    return best
