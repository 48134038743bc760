"""TensorFlow Lite for Microcontrollers (TFLM): what an int8 file needs on a microcontroller.

Measured with TFLM itself: the `tflite-micro` package (the [micro] extra) runs TFLM's C++
interpreter and reference kernels on this machine's CPU. That verifies the file and its memory
plan as TFLM sees them; it is not a run on a board (CMSIS-NN and other optimized kernels may
need more or less scratch memory).

- Flash: the file itself, compiled in as a C array (`xxd -i model.tflite`).
- RAM: the tensor arena. TFLM takes every byte it needs from one arena given by the app:
  activations (planned so that tensors not alive at the same time share memory), each op's
  persistent data (for an int8 conv: a multiplier and a shift per output channel), and one
  node and one tensor struct per op and tensor. `smallest_arena` finds the smallest arena
  that TFLM accepts by bisection, as an app developer would.
- Ops: the registrations a `tflite::MicroMutableOpResolver` needs (`resolver_calls`).

TFLM has kernels for fewer ops than LiteRT (none for GELU, which ConvMixer uses): `record`
says which ops a file it refuses lacks, so that a file for phones is described, not refused.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import tempfile

import numpy as np

from lru_keras import extras
from lru_keras.tflite import flatbuffer, runtime

# TFLM aligns its allocations to 16 bytes: finer arena sizes make no difference.
ARENA_STEP = 16
LARGEST_ARENA = 64 << 20
# MicroMutableOpResolver methods whose name is not the op name in camel case.
IRREGULAR_RESOLVER_NAMES = {"BATCH_MATMUL": "BatchMatMul", "CUMSUM": "CumSum", "PADV2": "PadV2"}
# What TFLM logs for an op it has no kernel for (micro_allocator.cc).
MISSING_KERNEL = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


class RefusedError(ValueError):
    """TFLM cannot allocate the file at all. `missing_ops`: the ops TFLM named as having no
    kernel for (e.g. ["GELU"]); empty when it refused the file for another reason."""

    def __init__(self, message, missing_ops=()):
        super().__init__(message)
        self.missing_ops = sorted(set(missing_ops))


def fits(content, arena_size):
    """Whether TFLM allocates the file's tensors in an arena of `arena_size` bytes.

    Tried in a forked child process: for some arenas that are too small, TFLM (the
    tflite-micro build pinned here) crashes with a segmentation fault instead of reporting
    the failed allocation (seen for 14-LruNet-2x at 500,000 bytes); a crash counts as not
    fitting. POSIX only (os.fork).
    """
    micro = _runtime()
    child = os.fork()
    if child == 0:  # the child: TFLM only, then leaves without running any Python cleanup
        status = 1
        # A crash here is an answer, not an error: no fatal-error traceback from a
        # faulthandler inherited from the parent (pytest enables one).
        faulthandler.disable()
        try:
            with _quiet_stderr():
                micro.Interpreter.from_bytes(bytes(content), arena_size=arena_size)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def smallest_arena(content):
    """The smallest `arena_size` (bytes, a multiple of 16) with which TFLM allocates the file's
    tensors; RefusedError if even 64 MiB is not enough (TFLM cannot run the file)."""
    if not fits(content, LARGEST_ARENA):
        reason = _failure(content)
        raise RefusedError(f"TensorFlow Lite Micro cannot allocate the file: {reason}",
                           MISSING_KERNEL.findall(reason))
    low, high = 0, LARGEST_ARENA // ARENA_STEP  # in steps: low fails, high fits
    while high - low > 1:
        middle = (low + high) // 2
        if fits(content, middle * ARENA_STEP):
            high = middle
        else:
            low = middle
    return high * ARENA_STEP


def resolver_calls(model):
    """The `MicroMutableOpResolver` registrations a file's ops need, e.g. ["AddConv2D", ...]
    (sorted; `model` is a `flatbuffer.read` result)."""
    return sorted(_resolver_call(name) for name in flatbuffer.op_counts(model))


def outputs(content, inputs, arena_size=None):
    """TFLM's outputs for a batch of `inputs` (already in the file's input dtype), image by
    image (a TFLM interpreter has a fixed batch of 1)."""
    micro = _runtime()
    with _quiet_stderr():
        interpreter = micro.Interpreter.from_bytes(
            bytes(content), arena_size=arena_size or LARGEST_ARENA)
    results = []
    for image in np.asarray(inputs):
        interpreter.set_input(image[None], 0)
        interpreter.invoke()
        results.append(interpreter.get_output(0)[0])
    return np.stack(results)


def reference_outputs(content, inputs):
    """LiteRT's outputs with its reference kernels (no XNNPACK, no optimized kernels): TFLM's
    kernels are ports of these, so an int8 file must give bit-identical outputs in both."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=bytes(content),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    given, returned = (interpreter.get_input_details()[0]["index"],
                       interpreter.get_output_details()[0]["index"])
    results = []
    for image in np.asarray(inputs):
        interpreter.set_tensor(given, image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(returned)[0])
    return np.stack(results)


def report(content, pixels):
    """{"flash_bytes", "arena_bytes", "operators", "resolver", "verified_images"} of an int8
    file, after checking that TFLM runs it in that arena with outputs bit-identical to LiteRT's
    reference kernels on `pixels` (a few images in [0, 255]); ValueError if not."""
    model = flatbuffer.read(content)
    inputs = runtime.TFLiteClassifier(content, xnnpack=False).quantize_input(pixels)
    arena = smallest_arena(content)
    got, expected = outputs(content, inputs, arena), reference_outputs(content, inputs)
    if not np.array_equal(got, expected):
        differing = int(np.sum(np.any(got != expected, axis=-1)))
        raise ValueError(
            f"TensorFlow Lite Micro's outputs differ from LiteRT's reference kernels on "
            f"{differing} of {len(got)} images (largest difference "
            f"{int(np.abs(got.astype(np.int64) - expected).max())}).")
    return {"flash_bytes": len(content), "arena_bytes": arena,
            "operators": sum(flatbuffer.op_counts(model).values()),
            "resolver": resolver_calls(model), "verified_images": len(got)}


def record(content, pixels):
    """What a spec records of an int8 file for microcontrollers: `report`, or, when TFLM
    cannot load the file, {"error", "missing_ops" (the ops it has no kernel for, if that is
    why), "flash_bytes", "operators"}: a file for phones is described, not refused.
    ValueError if TFLM runs the file otherwise than LiteRT's reference kernels."""
    try:
        return report(content, pixels)
    except RefusedError as error:
        return {"error": str(error), "missing_ops": error.missing_ops,
                "flash_bytes": len(content),
                "operators": sum(flatbuffer.op_counts(flatbuffer.read(content)).values())}


def _resolver_call(op_name):
    """"CONV_2D" -> "AddConv2D", "MAX_POOL_2D" -> "AddMaxPool2D": the op name in camel case,
    as micro_mutable_op_resolver.h names its methods, with its few irregular names."""
    if op_name.startswith(("CUSTOM:", "BUILTIN_")):
        raise ValueError(f"{op_name} has no MicroMutableOpResolver registration")
    if op_name in IRREGULAR_RESOLVER_NAMES:
        return "Add" + IRREGULAR_RESOLVER_NAMES[op_name]
    return "Add" + "".join(part if re.fullmatch(r"\d+D", part) else part.capitalize()
                           for part in op_name.split("_"))


def _failure(content):
    """What TFLM says when it refuses the file: its last log line (printed to the C stderr,
    captured here) and the Python error."""
    micro = _runtime()
    with tempfile.TemporaryFile() as log:
        try:
            with _stderr_to(log.fileno()):
                micro.Interpreter.from_bytes(bytes(content), arena_size=LARGEST_ARENA)
        except RuntimeError as error:
            log.seek(0)
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()
                     if line.strip()]
            return "; ".join([*lines[-2:], str(error)])
    return "no error"


def _runtime():
    return extras.require("tflite_micro.python.tflite_micro.runtime")


@contextlib.contextmanager
def _quiet_stderr():
    """TFLM prints each failed allocation of the bisection to the C stderr."""
    with open(os.devnull, "wb") as null, _stderr_to(null.fileno()):
        yield


@contextlib.contextmanager
def _stderr_to(descriptor):
    saved = os.dup(2)
    try:
        os.dup2(descriptor, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
