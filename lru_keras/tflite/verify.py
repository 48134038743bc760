"""After converting: the file must run in LiteRT as an app runs it (XNNPACK) and compute what
the Keras model computes. A converter can write files that LiteRT cannot prepare, and a wrong
input range or a broken rewrite gives a file that runs but predicts nonsense; both are
refused here, before anything is written.

The comparison, by quantization:
- float32 / float16: outputs on a few seeded noise images within a tolerance of Keras's (float16
  weights round to 11 bits, so their bound is looser, as it is for a Keras model that itself
  computes in float16 or bfloat16);
- int8: on (up to 100 of) the calibration images, real images, top-1 agreement with Keras and
  the largest difference relative to the range of Keras's outputs; only both failing refuses
  the file (a model with random weights has near-ties that int8 rounding flips, and
  near-constant outputs that make any rounding look large);
- dynamic: that it runs and gives finite outputs (its float activations with int8 weights
  drift too much on noise for a useful bound, and it has no calibration images).

And every op output's declared shape must be the shape LiteRT computes for
it (`check_declared_shapes`): LiteRT recomputes shapes and would run a file with wrong ones,
but TensorFlow Lite Micro and tools that plan memory from the file trust them.
"""

import collections
import warnings

import numpy as np

from lru_keras.tflite import flatbuffer, options, runtime
from lru_keras.tflite.errors import ExportError

# Largest |LiteRT - Keras| allowed, relative to max(1, the largest Keras output).
TOLERANCE = {"float32": 1e-3, "float16": 5e-2}
# int8: the least top-1 agreement with Keras on real images, and the largest difference
# relative to the range of Keras's outputs. On 100 CIFAR-10 images the zoo's int8 files agree
# on 97-99% with relative differences of 0.09-0.25; a file calibrated for the wrong input
# range agreed on 2.4%, and another model's file gives 0.89.
MIN_AGREEMENT = {"int8": 0.5}
MAX_RELATIVE_DIFF = {"int8": 0.5}
PROBE_IMAGES = 8
MAX_AGREEMENT_IMAGES = 100


def verify(content, model, quantization, input_range, pixels=None):
    """Runs `content` (a .tflite) with LiteRT and compares it with `model`.

    Args:
        pixels: real images in [0, 255] (int8: the calibration images); None: seeded noise.

    Returns {"images", "max_abs_diff", "relative_diff", "top1_agreement",
    "xnnpack_partitions", "undelegated_ops"}. Raises ExportError if LiteRT cannot run the file
    or it disagrees; warns (UserWarning) naming the ops XNNPACK does not take when they split
    the graph into several partitions.
    """
    image_shape = tuple(model.inputs[0].shape[1:])
    if pixels is None:
        pixels = np.random.default_rng(0).uniform(0, 255, (PROBE_IMAGES, *image_shape))
    pixels = np.asarray(pixels, np.float32)[:MAX_AGREEMENT_IMAGES]
    try:
        classifier = runtime.TFLiteClassifier(content, batch_size=len(pixels))
        got = classifier.predict(pixels)
    except (RuntimeError, ValueError) as error:
        raise ExportError(f"model {model.name!r}: LiteRT cannot run the converted file "
                          f"({quantization}): {error}") from None
    check_declared_shapes(content, f"model {model.name!r} ({quantization})")
    expected = model.predict(options.to_input_range(pixels, input_range), verbose=0,
                             batch_size=len(pixels))
    spread = float(expected.max() - expected.min())
    result = {
        "images": len(pixels),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "relative_diff": float(np.abs(got - expected).max() / spread) if spread else 0.0,
        "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
        "xnnpack_partitions": runtime.delegate_partitions(classifier),
        "undelegated_ops": runtime.undelegated_ops(classifier),
    }
    if not np.all(np.isfinite(got)):
        raise ExportError(f"model {model.name!r}: the converted file ({quantization}) gives "
                          f"non-finite outputs in LiteRT.")
    bound = TOLERANCE.get(quantization)
    if bound is not None and _computes_in_16_bits(model):
        # The Keras reference itself rounds to 8-11 bits (a mixed-precision model, e.g.
        # loaded from a .keras file trained with mixed_bfloat16); the file computes in float32.
        bound = max(bound, TOLERANCE["float16"])
    if bound is not None and result["max_abs_diff"] > bound * max(1.0, np.abs(expected).max()):
        raise ExportError(
            f"model {model.name!r}: the converted file ({quantization}) differs from Keras by "
            f"{result['max_abs_diff']:.3g} (allowed {bound:g} x max(1, |output|)).")
    least, most = MIN_AGREEMENT.get(quantization), MAX_RELATIVE_DIFF.get(quantization)
    if least is not None and result["top1_agreement"] < least and \
            result["relative_diff"] > most:
        raise ExportError(
            f"model {model.name!r}: the {quantization} file predicts the Keras model's class "
            f"on only {100 * result['top1_agreement']:.1f}% of {len(pixels)} calibration "
            f"images (at least {100 * least:.0f}% expected), and differs by "
            f"{result['relative_diff']:.2f} of the output range (at most {most} expected).")
    if result["xnnpack_partitions"] != 1:
        # One partition with a last op left out (an int8 SOFTMAX) runs at full speed; a split
        # graph does not (17 undelegated GELUs made an int8 ConvMixer slower than float).
        warnings.warn(
            f"model {model.name!r} ({quantization}): XNNPACK leaves "
            f"{len(result['undelegated_ops'])} ops to LiteRT's slower kernels "
            f"({_summary(result['undelegated_ops'])}); the graph runs in "
            f"{result['xnnpack_partitions']} XNNPACK partitions.", stacklevel=3)
    return result


def declared_shape_mismatches(content):
    """[(op index, op name, declared shape, computed shape)] of every op output whose shape
    in the file differs from the one LiteRT computes at the file's own (batch 1) input shape,
    in every subgraph (an op of a loop's body or condition is named "NAME in subgraph S").
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=bytes(content),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    model = flatbuffer.read(content)
    found = []
    for s, graph in enumerate(model.subgraphs):
        computed = {d["index"]: [int(n) for n in d["shape"]]
                    for d in interpreter.get_tensor_details(subgraph_index=s)}
        found += [(op.index, op.name if s == 0 else f"{op.name} in subgraph {s}", declared,
                   computed[t])
                  for op in flatbuffer.operators(model, s) for t in op.outputs
                  if t in computed
                  and (declared := [int(n) for n in graph.tensors[t].shape]) != computed[t]]
    return found


def check_declared_shapes(content, what):
    """ExportError naming the first few ops whose declared output shape is wrong."""
    wrong = declared_shape_mismatches(content)
    if wrong:
        examples = "; ".join(f"op {index} {name}: declared {declared}, computes {computed}"
                             for index, name, declared, computed in wrong[:3])
        raise ExportError(
            f"{what}: {len(wrong)} ops of the converted file declare an output shape other "
            f"than the one they compute ({examples}). TensorFlow Lite Micro trusts the "
            f"declared shapes and would refuse or misread the file.")


def _computes_in_16_bits(model):
    return any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
               for layer in model.layers)


def _summary(names):
    return ", ".join(f"{count} x {name}" for name, count in collections.Counter(names).items())
