"""Quantization-aware fine-tuning of an LruNet with tensorflow-model-optimization (own process).

tensorflow-model-optimization (tfmot) 0.8.1 only takes tf_keras models, and importing it sets
TF_USE_LEGACY_KERAS=1 in the process. So this file is run as a script in a child process by
`lru_keras.tflite.qat.quantize_aware`; the parent, with its Keras
3 models, never imports tf_keras or tfmot. The job directory the parent writes holds:

    job.json        the network (stages, reuses, classes, input shape), training settings
    constants.npz   the constants of the model's int8 export graph (`qat.export_constants`)
    check.npz       images on which to record the float outputs before training

The child rebuilds that export graph (`LRUBlock.export_call`, int8 form) as a flat tf_keras
model, through the same `reuse_chain` and channel moves: each shared kernel is ONE layer object
called at every reuse; each reuse's BatchNorm is a per-channel multiply (`ChannelScale`) and
add (`ChannelOffset`) of its own. tfmot's
`quantize_apply` wraps every layer; the quantizers simulate what the int8 .tflite computes:

- weights: convs per output channel, symmetric (the depthwise kernel too: tfmot's own conv
  quantizer takes the last kernel axis, which for a depthwise conv of multiplier 1 is a
  single channel); BatchNorm scales and offsets per tensor, as the int8 MUL/ADD constants;
- activations: every tensor the .tflite holds in int8 gets one fake quantization with a range
  fixed before training (`FixedRangeQuantizer`), calibrated like the export calibrates:
  min/max over training images, narrowed to the range of least squared int8 error. (tfmot's
  MovingAverageQuantizer starts at [-6, 6] and moves by 0.1% per step, so a short fine-tune
  would train against ranges that clip the 0..255 input and most activations.)

`fit` then fine-tunes the float weights through these fake quantizations (straight-through
gradients) towards the float model's pre-softmax class scores (`Distillation`). The child
writes `float_outputs.npy` (before training: checks the weight transfer), `finetuned.npz`
(the trained constants, same keys as constants.npz) and `history.json`; the parent puts the
constants back into its Keras 3 model and exports the int8 .tflite with
`lru_keras.tflite.export`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # what importing tfmot does anyway, stated up front

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
# Not exported by tfmot: the layer `quantize_apply` adds after the input.
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (  # noqa
    QuantizeLayer)

from lru_keras.layers.channel_order import shuffle_channels, tile_groups  # noqa: E402
from lru_keras.layers.reuse import reuse_chain  # noqa: E402
from lru_keras.progress import FitProgress, Ticker  # noqa: E402
from lru_keras.tflite.ranges import HISTOGRAM_BINS, best_shrink  # noqa: E402

quantize = tfmot.quantization.keras
layers = tf_keras.layers
CALIBRATION_BATCH = 25


# ------------------------------------------------------------------------------------------
# Quantizers (tfmot's Quantizer interface).
# ------------------------------------------------------------------------------------------
class FixedRangeQuantizer(quantize.quantizers.Quantizer):
    """Asymmetric per-tensor int8 fake quantization with a range set by calibration."""

    def build(self, tensor_shape, name, layer):
        return {"min_var": layer.add_weight(f"{name}_min", shape=(), trainable=False,
                                            initializer=tf_keras.initializers.Constant(-6.0)),
                "max_var": layer.add_weight(f"{name}_max", shape=(), trainable=False,
                                            initializer=tf_keras.initializers.Constant(6.0))}

    def __call__(self, inputs, training, weights, **kwargs):
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, weights["min_var"], weights["max_var"], num_bits=8, narrow_range=False)

    def get_config(self):
        return {}


class ChannelWeightQuantizer(quantize.quantizers.Quantizer):
    """Symmetric int8 fake quantization per output channel of a conv kernel, from the
    current weights (TFLite's per-channel conv weights). `axis` is the channel axis: -1 for
    Conv2D, 2 for a DepthwiseConv2D kernel (k, k, channels, 1)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        # The channel axis is last, or followed only by the size-1 multiplier axis of a
        # depthwise kernel: either way a (-1, channels) view puts one channel per column.
        channels = inputs.shape[self.axis]
        moved = tf.reshape(inputs, [-1, channels])
        limit = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(moved), axis=0), 1e-12))
        quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            moved, -limit, limit, num_bits=8, narrow_range=True)
        return tf.reshape(quantized, tf.shape(inputs))

    def get_config(self):
        return {"axis": self.axis}


class TensorWeightQuantizer(quantize.quantizers.Quantizer):
    """Asymmetric per-tensor int8 fake quantization of a constant vector, from its values
    (the int8 MUL/ADD constants of a per-reuse BatchNorm)."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        low = tf.stop_gradient(tf.minimum(tf.reduce_min(inputs), 0.0))
        high = tf.stop_gradient(tf.maximum(tf.reduce_max(inputs), 0.0))
        return tf.quantization.fake_quant_with_min_max_vars(inputs, low, high, num_bits=8)

    def get_config(self):
        return {}


# ------------------------------------------------------------------------------------------
# Layers of the export graph that tf_keras lacks.
# ------------------------------------------------------------------------------------------
class TileGroups(layers.Layer):
    """`channel_order.tile_groups`: the tiled input of the shared depthwise conv."""

    def __init__(self, groups, multiplier, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.multiplier = groups, multiplier

    def call(self, x):
        return tile_groups(x, self.groups, self.multiplier)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "multiplier": self.multiplier}


class PaperShuffle(layers.Layer):
    """`channel_order.shuffle_channels`: the paper's shuffle without a gather."""

    def call(self, x):
        return shuffle_channels(x, 2, swap_halves=True)


class QuantPoint(layers.Layer):
    """Identity; its QuantizeConfig fake-quantizes the output (one range per call site)."""

    def call(self, x):
        return tf.identity(x)


class ChannelScale(layers.Layer):
    """`x * scale` per channel: the multiply of one reuse's BatchNorm."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


class ChannelOffset(layers.Layer):
    """`x + offset` per channel: the add of one reuse's BatchNorm."""

    def build(self, input_shape):
        self.offset = self.add_weight("offset", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.offset


class GroupedPointwise(layers.Layer):
    """A grouped 1x1 conv (kernel in Conv2D's layout (1, 1, in/groups, out)) as one einsum.

    tf_keras runs `Conv2D(groups>1)` on CPU through an XLA function (~11 s per training step
    of 14-LruNet-1x at batch 50), and TensorFlow's own grouped conv has no CPU gradient
    unless oneDNN is on. Only this process trains with it: the .tflite comes from the Keras 3
    export, so the formulation does not reach the file.
    """

    def __init__(self, filters, groups, use_bias=False, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.groups, self.use_bias = filters, groups, use_bias
        self.activation = tf_keras.activations.get(activation)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            "kernel", shape=(1, 1, input_shape[-1] // self.groups, self.filters))
        if self.use_bias:
            self.bias = self.add_weight("bias", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        spatial = list(x.shape[1:-1])
        per_group = self.filters // self.groups
        grouped = tf.reshape(x, [-1, *spatial, self.groups, x.shape[-1] // self.groups])
        kernel = tf.reshape(self.kernel, [-1, self.groups, per_group])   # (in/g, g, out/g)
        y = tf.reshape(tf.einsum("bhwgi,igo->bhwgo", grouped, kernel),
                       [-1, *spatial, self.filters])
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "groups": self.groups,
                "use_bias": self.use_bias,
                "activation": tf_keras.activations.serialize(self.activation)}


# ------------------------------------------------------------------------------------------
# What each layer quantizes (tfmot's QuantizeConfig interface).
# ------------------------------------------------------------------------------------------
class LayerQuantizeConfig(quantize.QuantizeConfig):
    """Quantizes the weight attributes `weights` (with `weight_quantizer`: "channel",
    "depthwise" or "tensor") and, if `output`, the layer's output with a fixed range."""

    def __init__(self, weights=(), weight_quantizer="channel", output=True):
        self.weights, self.weight_quantizer, self.output = list(weights), weight_quantizer, output

    def _quantizer(self):
        if self.weight_quantizer == "tensor":
            return TensorWeightQuantizer()
        return ChannelWeightQuantizer(2 if self.weight_quantizer == "depthwise" else -1)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, name), self._quantizer()) for name in self.weights]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        for name, weight in zip(self.weights, quantize_weights):
            setattr(layer, name, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [FixedRangeQuantizer()] if self.output else []

    def get_config(self):
        return {"weights": self.weights, "weight_quantizer": self.weight_quantizer,
                "output": self.output}


CUSTOM_OBJECTS = {cls.__name__: cls for cls in (
    FixedRangeQuantizer, ChannelWeightQuantizer, TensorWeightQuantizer, TileGroups,
    PaperShuffle, QuantPoint, ChannelScale, ChannelOffset, GroupedPointwise,
    LayerQuantizeConfig)}
OUTPUT_ONLY = LayerQuantizeConfig()
MOVES_ONLY = LayerQuantizeConfig(output=False)  # values only move: the input's scale


# ------------------------------------------------------------------------------------------
# The network.
# ------------------------------------------------------------------------------------------
class Builder:
    """Builds the annotated tf_keras model and remembers which constants each layer holds."""

    def __init__(self, constants):
        self.constants = constants
        self.holders = []  # (layer, {weight attribute: constant key})

    def hold(self, layer, **keys):
        self.holders.append((layer, keys))
        return layer

    def conv(self, name, groups=1, strides=1):
        """A conv with its BatchNorm folded into a bias, and the ReLU that follows it."""
        kernel = self.constants[f"{name}/kernel"]
        if groups > 1:
            layer = GroupedPointwise(kernel.shape[-1], groups, use_bias=True,
                                     activation="relu", name=name)
        else:
            layer = layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=strides,
                                  activation="relu", name=name)
        self.hold(layer, kernel=f"{name}/kernel", bias=f"{name}/bias")
        return quantize.quantize_annotate_layer(layer, LayerQuantizeConfig(["kernel"]))

    def build(self, job):
        inputs = tf_keras.Input(job["input_shape"], name="image")
        x = annotate(QuantPoint(name="input_quant"), OUTPUT_ONLY)(inputs)
        # Kept apart from the stem kernel: folded in, the kernel's weights would be ~1e-4,
        # below the fine-tune's step sizes. (Exact in int8: pixel / 255 takes 256 values.)
        x = annotate(layers.Rescaling(job["input_scale"], name="rescaling"), MOVES_ONLY)(x)
        x = layers.ZeroPadding2D(1, name="stem_pad")(x)
        x = self.conv("stem_conv", strides=2)(x)
        if job["stem_repeat"] > 1:
            x = annotate(layers.Concatenate(name="stem_repeat"), MOVES_ONLY)(
                [x] * job["stem_repeat"])
        for stage in job["stages"]:
            x = self.lru_block(x, stage)
            name = stage["name"]
            if stage["pool"]:
                x = layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
                x = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
            if stage["concat"]:
                x = annotate(layers.Concatenate(name=f"{name}_concat"), MOVES_ONLY)([x, x])
        x = self.conv("head_conv", groups=job["head_groups"])(x)
        x = layers.Dropout(job["dropout"], name="head_dropout")(x)
        x = self.conv("classifier_conv")(x)
        x = annotate(layers.GlobalAveragePooling2D(name="avg_pool"), OUTPUT_ONLY)(x)
        outputs = annotate(layers.Softmax(name="predictions"), MOVES_ONLY)(x)
        model = tf_keras.Model(inputs, outputs, name=job["name"])
        for layer, keys in self.holders:
            for attribute, key in keys.items():
                weight = getattr(layer, attribute)
                weight.assign(self.constants[key].reshape(weight.shape))
        return model

    def lru_block(self, x, stage):
        """N reuses of one depthwise and one grouped 1x1 layer object, as the export graph."""
        name, reuse = stage["name"], stage["reuse"]
        filters, groups, multiplier = stage["filters"], stage["groups"], stage["multiplier"]
        dw_kernel = self.constants[f"{name}/dw"]
        depthwise = self.hold(layers.DepthwiseConv2D(
            dw_kernel.shape[:2], padding="same", use_bias=False, name=f"{name}_dw"),
            depthwise_kernel=f"{name}/dw")
        pointwise = self.hold(GroupedPointwise(filters, groups, name=f"{name}_pw"),
                              kernel=f"{name}/pw")
        depthwise = annotate(depthwise, LayerQuantizeConfig(["depthwise_kernel"], "depthwise",
                                                            output=False))
        pointwise = annotate(pointwise, LayerQuantizeConfig(["kernel"], output=False))
        # A block used once is exported with its BatchNorms folded into the convs (nothing to
        # share): then only the BatchNorm's output is an int8 tensor.
        kept = reuse > 1

        def layer(i, j, y):
            if j == 0:
                y = annotate(TileGroups(groups, multiplier, name=f"{name}_tile{i}"),
                             MOVES_ONLY)(y)
            y = (depthwise, pointwise)[j](y)  # the shared layer
            # Its output range is this reuse's own.
            return annotate(QuantPoint(name=f"{name}_q{i}_{j}"),
                            OUTPUT_ONLY if kept else MOVES_ONLY)(y)

        def norm(i, j, y):
            scale = self.hold(ChannelScale(name=f"{name}_scale{i}_{j}"),
                              scale=f"{name}/scale{i}_{j}")
            offset = self.hold(ChannelOffset(name=f"{name}_offset{i}_{j}"),
                               offset=f"{name}/offset{i}_{j}")
            y = annotate(scale, LayerQuantizeConfig(["scale"], "tensor") if kept
                         else MOVES_ONLY)(y)
            return annotate(offset, LayerQuantizeConfig(["offset"], "tensor") if kept
                            else OUTPUT_ONLY)(y)

        def merge(i, y, x):  # ADD + ReLU
            x = annotate(layers.Add(name=f"{name}_add{i}"), MOVES_ONLY)([y, x])
            return annotate(layers.ReLU(name=f"{name}_relu{i}"), OUTPUT_ONLY)(x)

        def move(i, x):
            if not stage["shuffle"]:
                return x
            return annotate(PaperShuffle(name=f"{name}_shuffle{i}"), MOVES_ONLY)(x)

        return reuse_chain(x, reuse, 2, layer, norm, merge, move)

    def trained_constants(self, model):
        """The constants (same keys as constants.npz) from the trained quantized model."""
        constants = {}
        for layer, keys in self.holders:
            # The wrapper tracks the float variables (the wrapped layer's attributes hold
            # their fake-quantized values while it runs).
            variables = {w.name.split("/")[-1].split(":")[0]: w
                         for w in model.get_layer(f"quant_{layer.name}").weights}
            for attribute, key in keys.items():
                constants[key] = variables[attribute].numpy().reshape(self.constants[key].shape)
        return constants


def annotate(layer, config):
    return quantize.quantize_annotate_layer(layer, config)


# ------------------------------------------------------------------------------------------
# Calibration of the fixed activation ranges.
# ------------------------------------------------------------------------------------------
def calibrate(float_model, model, images):
    """Sets every FixedRangeQuantizer's range: min/max of the float model's tensor at that
    point over `images`, narrowed to the least int8 error (`ranges.best_shrink`)."""

    names = [layer.name for layer in model.layers
             if any(w.name.endswith("output_min:0") for w in layer.weights)]
    # The annotated model's layers are wrappers with generic names; find them by the layer
    # they wrap (the quantized model names its wrappers "quant_" + that layer's name).
    wrapped = {getattr(layer, "layer", layer).name: layer for layer in float_model.layers}
    probes = tf_keras.Model(float_model.inputs, [
        wrapped[name[len("quant_"):]].output for name in names])
    batches = [images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]
    low = np.full(len(names), np.inf)
    high = np.full(len(names), -np.inf)
    for batch in batches:
        for k, values in enumerate(probes.predict_on_batch(batch)):
            low[k] = min(low[k], float(values.min()))
            high[k] = max(high[k], float(values.max()))
    low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
    histograms = np.zeros((len(names), HISTOGRAM_BINS))
    for batch in batches:
        for k, values in enumerate(probes.predict_on_batch(batch)):
            histograms[k] += np.histogram(values, HISTOGRAM_BINS, (low[k], high[k]))[0]
    ranges = {name: (low[k], high[k]) if name == "quant_input_quant" else
              tuple(np.array([low[k], high[k]]) * best_shrink(histograms[k], low[k], high[k]))
              for k, name in enumerate(names)}
    for name, (minimum, maximum) in ranges.items():
        _set_range(model.get_layer(name), minimum, maximum)
    # tfmot puts its own QuantizeLayer (MovingAverageQuantizer, [-6, 6]) on the model input:
    # it gets the input's range, the pixel range.
    for layer in model.layers:
        if isinstance(layer, QuantizeLayer):
            _set_range(layer, *ranges["quant_input_quant"])
    return len(ranges)


def _set_range(layer, minimum, maximum):
    for weight in layer.weights:
        if weight.name.endswith("_min:0"):
            weight.assign(tf.fill(weight.shape, float(minimum)))
        elif weight.name.endswith("_max:0"):
            weight.assign(tf.fill(weight.shape, float(maximum)))


# ------------------------------------------------------------------------------------------
# Fine-tuning by distillation.
# ------------------------------------------------------------------------------------------
class Distillation(tf_keras.Model):
    """Fine-tunes `student` (the fake-quantized model) to reproduce the class scores of
    `teacher` (the float model it started from): mean squared difference of the pooled
    scores before the softmax (`avg_pool`), per image and class.

    Why the pre-softmax scores, and why not the labels. Measured on 14-LruNet-1x, 5,000
    CIFAR-10 training images x 2 epochs, full test set (post-training int8: 89.01, and 96.83%
    of its test predictions equal the float model's):
    - on the labels (Adam 1e-5) the float function itself moved: float 87.17, int8 87.12;
    - towards the teacher's probabilities (KL divergence, Adam 1e-5) int8 88.82: a confident
      teacher's probabilities are nearly one-hot on training images and say little about
      the function;
    - towards its pre-softmax scores (this loss) int8 88.99 at Adam 1e-5 and 89.10 at 3e-5,
      97.05% and 97.25% of the predictions equal to the float model's.
    The student runs without its dropout (training=False; the fake quantizations do not
    depend on it), so that both see the same function.
    """

    def __init__(self, student, teacher, **kwargs):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        self.teacher.trainable = False
        self.student_scores = _scores_model(student)
        self.teacher_scores = _scores_model(teacher)
        self.loss_mean = tf_keras.metrics.Mean("loss")
        self.accuracy_mean = tf_keras.metrics.Mean("accuracy")

    @property
    def metrics(self):
        return [self.loss_mean, self.accuracy_mean]  # reset by fit at each epoch

    def call(self, images, training=None):
        return self.student(images, training=training)

    def train_step(self, batch):
        images, labels = batch
        target = self.teacher_scores(images, training=False)
        with tf.GradientTape() as tape:
            predicted = self.student_scores(images, training=False)
            loss = tf.reduce_mean(tf.square(predicted - target))
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        hits = tf.equal(tf.argmax(predicted, -1, output_type=tf.int32),
                        tf.cast(tf.reshape(labels, [-1]), tf.int32))
        self.loss_mean.update_state(loss, sample_weight=tf.shape(images)[0])
        self.accuracy_mean.update_state(tf.cast(hits, tf.float32))
        return {"loss": self.loss_mean.result(), "accuracy": self.accuracy_mean.result()}


class TrainingProgress(FitProgress, tf_keras.callbacks.Callback):
    """Puts the epoch, step and loss into the ticker's status (printed every ~10 s)."""


def _scores_model(model):
    """The sub-model of `model` (annotated or quantized) that ends at the pooled class scores
    (the layer named "avg_pool", whichever wrapper holds it)."""
    layer = next(layer for layer in model.layers
                 if getattr(layer, "layer", layer).name == "avg_pool")
    return tf_keras.Model(model.inputs, layer.output)


# ------------------------------------------------------------------------------------------
# The job.
# ------------------------------------------------------------------------------------------
def training_data(job):
    """Augmented, shuffled batches of the job's training images (the paper's augmentation)."""
    from lru_keras import data   # its tf.data pipeline only; no Keras 3 model is built here

    if job["train"]["kind"] == "dataset":
        return data.load(job["train"]["dataset"], job["train"]["split"], training=True,
                         batch_size=job["batch_size"], seed=job["seed"],
                         data_dir=job["train"]["data_dir"])
    arrays = np.load(job["train"]["npz"])
    ds = tf.data.Dataset.from_tensor_slices(
        (arrays["x"].astype(np.float32), arrays["y"].astype(np.int32)))
    ds = ds.shuffle(len(arrays["y"]), seed=job["seed"]).batch(job["batch_size"])
    seeds = tf.data.Dataset.random(seed=job["seed"], rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds).map(
        lambda batch, seed: (data.augment_batch(batch[0], seed), batch[1])).prefetch(2)


def calibration_images(job, count):
    """The first `count` training images, unaugmented (float32 pixels)."""
    if job["train"]["kind"] == "arrays":
        return np.load(job["train"]["npz"])["x"][:count].astype(np.float32)
    from lru_keras import data

    images = []
    for batch, _ in data.load(job["train"]["dataset"], job["train"]["split"], batch_size=100,
                              shuffle=True, seed=job["seed"],
                              data_dir=job["train"]["data_dir"]):
        images.append(batch.numpy())
        if sum(map(len, images)) >= count:
            break
    return np.concatenate(images)[:count]


def run(job_dir):
    """Runs the job of `job_dir`. With the job's `verbose`, says on stdout (the parent keeps
    stderr for errors) what it does, at least every ~10 s; verbose 2 adds Keras's line per
    epoch."""
    job_dir = Path(job_dir)
    job = json.loads((job_dir / "job.json").read_text())
    ticker = Ticker("qat", "building the tf_keras copy of the model", stream=sys.stdout,
                    enabled=job["verbose"] > 0).start()
    tf_keras.utils.set_random_seed(job["seed"])
    builder = Builder(dict(np.load(job_dir / "constants.npz")))
    annotated = builder.build(job)  # annotations only mark layers: this computes in float
    check = np.load(job_dir / "check.npz")["x"].astype(np.float32)
    np.save(job_dir / "float_outputs.npy", annotated.predict(check, verbose=0))
    ticker.say("simulating int8 (tfmot quantize_apply)")
    with quantize.quantize_scope(CUSTOM_OBJECTS):
        model = quantize.quantize_apply(annotated)
    ticker.say(f"calibrating the activation ranges on {job['calibration_images']} training "
               f"images")
    calibrate(annotated, model, calibration_images(job, job["calibration_images"]))
    # Adam: with each BatchNorm frozen into a per-channel multiply, the gradient of a kernel
    # channel is scaled by that channel's BatchNorm scale (up to ~300x gamma), and SGD at
    # 1e-3 diverged within a few steps; Adam's per-weight step size does not see that scale.
    distillation = Distillation(model, annotated)
    distillation.compile(optimizer=tf_keras.optimizers.Adam(job["learning_rate"]))
    history = {}
    if job["epochs"]:
        epochs = f"{job['epochs']} epoch{'s' if job['epochs'] > 1 else ''}"
        ticker.say(f"fine-tuning {epochs} on {job['train']['description']} (the first step "
                   f"compiles)")
        fit = distillation.fit(training_data(job), epochs=job["epochs"],
                               verbose=2 if job["verbose"] == 2 else 0,
                               callbacks=[TrainingProgress(ticker, "fine-tuning")])
        history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    ticker.stop()
    np.savez(job_dir / "finetuned.npz", **builder.trained_constants(model))
    (job_dir / "history.json").write_text(json.dumps(history))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_dir")
    sys.exit(run(parser.parse_args().job_dir))
