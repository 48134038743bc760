"""Regenerates the shipped .tflite files of the zoo and tflite/manifest.json (issue 7).

For every registered pretrained model (`lru_keras.zoo.list_weights()`), exports int8 (full
integer, calibrated on 300 training images of its dataset) and float16 with
`lru_keras.tflite.export` defaults (each shared kernel stored once), then measures each file
with LiteRT's interpreter: top-1 accuracy on the full test set and batch-1 latency on one
thread (XNNPACK). The manifest lists, per file: model, dataset, quantization, size, sha256,
accuracy (and the Keras model's recorded accuracy), latency, input and output spec.

Needs the datasets prepared in the default data dir (`make data`) or in --data-dir; else it
stops with one line naming the directory and the command that prepares it. Usage, from the
repository root:
    python tflite/make_tflite.py                 # everything (about 20 minutes on 2 cores)
    python tflite/make_tflite.py --only lrunet1_1x.cifar10 --skip-accuracy
    python tflite/make_tflite.py --check         # re-export into a temporary folder and
                                                 # compare with the shipped files
    python tflite/make_tflite.py --record-micro  # measure the shipped int8 files in TensorFlow
                                                 # Lite Micro again (spec JSON and manifest)

tests/test_tflite.py checks that the shipped files and the manifest agree, and (slow) that a
fresh export has the same structure and the shipped files the recorded accuracy.
"""

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
README = HERE / "README.md"
TABLE_START, TABLE_END = "<!-- table: make_tflite.py -->", "<!-- end of table -->"
# The top-level README's "Microcontrollers" table: the int8 files in TensorFlow Lite Micro.
MICRO_README = HERE.parent / "README.md"
MICRO_TABLE_START = "<!-- table: make_tflite.py, microcontrollers -->"
QUANTIZATIONS = ("int8", "float16")


def file_name(weights_name, quantization):
    """e.g. lrunet14_1x.cifar10.int8.tflite (the naming `lru-keras compare` reads too)."""
    from lru_keras.tflite.options import zoo_file_name

    return zoo_file_name(weights_name, quantization)


def export_one(entry, quantization, folder, data_dir=None):
    """Exports one registered model; returns the spec `lru_keras.tflite.export` wrote."""
    from lru_keras import tflite, zoo

    model = zoo.create(entry.name)
    # int8 files take and return uint8, as Android's Task Library and TensorBuffer need.
    io_dtype = "uint8" if quantization == "int8" else None
    return tflite.export(model, Path(folder) / file_name(entry.name, quantization),
                         quantization, dataset=entry.dataset, data_dir=data_dir,
                         io_dtype=io_dtype, model_info=entry.model_info())


def structure(path):
    """What must not change between the shipped file and a fresh export: the op sequence,
    every tensor's type and shape, the sharing of conv weights, the input/output spec (float
    constants: `float_constants_differ`; int8 ranges depend on float rounding in calibration,
    so quantized constants are compared by the tests with a tolerance)."""
    from lru_keras.tflite import flatbuffer
    from lru_keras.tflite.export import sharing_report

    content = Path(path).read_bytes()
    model = flatbuffer.read(content)
    graph = model.subgraphs[0]
    spec = flatbuffer.read_metadata_json(content)
    return {
        "ops": [op.name for op in flatbuffer.operators(model)],
        "tensors": [(flatbuffer.type_name(t.type), [int(d) for d in t.shape])
                    for t in graph.tensors],
        "sharing": sharing_report(model),
        "input": {k: v for k, v in spec["input"].items() if k not in ("scale", "zero_point")},
        "output": {k: v for k, v in spec["output"].items() if k not in ("scale", "zero_point")},
    }


def float_constants(path):
    """{tensor index: values} of every float32 / float16 constant of a .tflite file."""
    import numpy as np

    from lru_keras.tflite import flatbuffer

    model = flatbuffer.read(Path(path).read_bytes())
    constants = {}
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        kind = flatbuffer.type_name(tensor.type)
        content = flatbuffer.tensor_bytes(model, tensor)
        if kind in ("float32", "float16") and content:
            constants[index] = np.frombuffer(content, kind)
    return constants


def float_constants_differ(path, other):
    """The tensor indices whose float constants differ by more than one unit in the last place
    of their type. Folding BatchNorms into kernels rounds differently on CPUs with and without
    some vector instructions (seen: single values one float16 ULP apart between an AMD EPYC
    and an Intel Xeon), so the files of two machines need not be byte-identical."""
    import numpy as np

    mine, theirs = float_constants(path), float_constants(other)
    if sorted(mine) != sorted(theirs):
        return sorted(set(mine) ^ set(theirs))
    return [index for index, values in mine.items()
            if values.shape != theirs[index].shape or np.any(
                np.abs(values.astype(np.float64) - theirs[index])
                > np.spacing(np.abs(theirs[index])).astype(np.float64))]


def measure(path, dataset, data_dir=None, accuracy=True):
    from lru_keras import tflite
    from lru_keras.tflite.runtime import latency

    row = {}
    if accuracy:
        result = tflite.evaluate(path, dataset, "test", data_dir=data_dir, progress=False)
        row.update(accuracy=round(result["accuracy"], 2), test_images=result["images"])
    timing = latency(path, num_threads=1, runs=200)
    row.update(latency_ms_1_thread_median=round(timing["median_ms"], 2),
               latency_ms_1_thread_min=round(timing["min_ms"], 2),
               xnnpack_partitions=timing["xnnpack_partitions"])
    return row


def manifest_row(entry, quantization, spec, measured):
    return {
        "file": spec["file"], "labels": spec["labels_file"],
        "spec": spec["file"][:-len(".tflite")] + ".json",
        "weights": entry.name, "model": entry.describe(), "dataset": entry.dataset,
        "quantization": quantization, "share_weights": spec["share_weights"],
        "size_bytes": spec["size_bytes"], "sha256": spec["sha256"],
        "keras_accuracy": entry.accuracy, **measured,
        "input": spec["input"], "output": spec["output"],
        **({"micro": spec["micro"]} if "micro" in spec else {}),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="registered weights names")
    parser.add_argument("--quantization", nargs="+", default=list(QUANTIZATIONS),
                        choices=["float32", "float16", "dynamic", "int8"])
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--data-dir",
                        help="TFDS data dir (default: lru_keras.data.default_data_dir())")
    parser.add_argument("--check", action="store_true",
                        help="export into a temporary folder and compare with tflite/")
    parser.add_argument("--record-micro", action="store_true",
                        help="measure the shipped int8 files in TensorFlow Lite Micro (as the "
                             "export does) and record it in their spec JSON and the manifest")
    args = parser.parse_args(argv)
    from lru_keras.data import DatasetNotAvailableError

    try:
        return run(args)
    except DatasetNotAvailableError as error:
        print(f"make_tflite.py: error: {error}", file=sys.stderr)
        return 2


def run(args):
    """Exports, measures and records what the parsed arguments select; returns the status."""
    from lru_keras.zoo import list_weights

    entries = [e for e in list_weights() if not args.only or e.name in args.only]
    if args.check:
        return check(entries, args.quantization, args.data_dir)
    if args.record_micro:
        return record_micro(entries, args.data_dir)
    old = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {"models": []}
    rows = {(r["weights"], r["quantization"]): r for r in old["models"]}
    for entry in entries:
        for quantization in args.quantization:
            spec = export_one(entry, quantization, HERE, args.data_dir)
            measured = measure(HERE / spec["file"], entry.dataset, args.data_dir,
                               accuracy=not args.skip_accuracy)
            row = manifest_row(entry, quantization, spec, measured)
            rows[(entry.name, quantization)] = row
            print(json.dumps({k: row[k] for k in ("file", "size_bytes", "accuracy",
                                                  "latency_ms_1_thread_min") if k in row}),
                  flush=True)
    import ai_edge_litert
    import tensorflow as tf

    manifest = {
        "generator": "tflite/make_tflite.py (lru_keras.tflite.export defaults)",
        "environment": {"tensorflow": tf.__version__,
                        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "2.3.0"),
                        "machine": platform.machine(), "platform": platform.platform()},
        "notes": "accuracy: top-1 on the full test set with ai_edge_litert's interpreter "
                 "(XNNPACK); keras_accuracy: the Keras model's recorded accuracy. latency: "
                 "batch 1, one thread, XNNPACK, on the machine that generated the files "
                 "(2-core x86-64 shared with other jobs: the minimum is the steadier figure).",
        "models": sorted(rows.values(), key=lambda r: (r["weights"], r["quantization"])),
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    write_readme_table(manifest)
    return 0


def record_micro(entries, data_dir=None):
    """`micro.record` of each shipped int8 file of `entries`, on the first images the export
    checks it on (its calibration images), into its spec JSON and manifest row."""
    from lru_keras.tflite import calibration_data, micro
    from lru_keras.tflite.export import MICRO_IMAGES

    manifest = json.loads(MANIFEST.read_text())
    rows = {(r["weights"], r["quantization"]): r for r in manifest["models"]}
    for entry in entries:
        path = HERE / file_name(entry.name, "int8")
        pixels = calibration_data.calibration_images(
            dataset=entry.dataset, image_shape=entry.input_shape, data_dir=data_dir)
        report = micro.record(path.read_bytes(), pixels[:MICRO_IMAGES])
        spec_path = path.with_suffix(".json")
        spec = json.loads(spec_path.read_text())
        spec_path.write_text(json.dumps({**spec, "micro": report}, indent=1, sort_keys=True)
                             + "\n")
        rows[(entry.name, "int8")]["micro"] = report
        print(json.dumps({"file": path.name, **report}), flush=True)
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    write_readme_table(manifest)
    return 0


def readme_table(manifest):
    """The README's table of shipped files, from the manifest."""
    lines = ["| file | model | size | test accuracy (Keras) | latency, 1 thread |",
             "|---|---|---:|---:|---:|"]
    for r in manifest["models"]:
        accuracy = f"{r['accuracy']:.2f} ({r['keras_accuracy']:.2f})" if "accuracy" in r else ""
        lines.append(f"| `{r['file']}` | {r['model']}, {r['dataset']} | "
                     f"{r['size_bytes'] / 1e6:.3f} MB | {accuracy} | "
                     f"{r['latency_ms_1_thread_min']:.2f} ms |")
    return "\n".join(lines)


def micro_table(manifest):
    """The top-level README's table of the int8 files in TensorFlow Lite Micro (a file it
    cannot load: the ops it has no kernel for, in the RAM column)."""
    lines = ["| file | flash (file) | RAM (smallest arena) | operators | op registrations |",
             "|---|---:|---:|---:|---:|"]
    for r in manifest["models"]:
        if "micro" in r:
            m = r["micro"]
            ram, registrations = ((f"{m['arena_bytes'] / 1024:.0f} KiB", len(m["resolver"]))
                                  if "error" not in m else
                                  (f"does not run: no TFLM kernel for "
                                   f"{', '.join(m['missing_ops'])}", "-"))
            lines.append(f"| `{r['file']}` | {m['flash_bytes'] / 1024:.0f} KiB | {ram} | "
                         f"{m['operators']} | {registrations} |")
    return "\n".join(lines)


def write_readme_table(manifest):
    _replace_table(README, TABLE_START, readme_table(manifest))
    _replace_table(MICRO_README, MICRO_TABLE_START, micro_table(manifest))


def _replace_table(path, start, table):
    """Replaces the text between `start` and the next TABLE_END of `path` with `table`."""
    text = path.read_text()
    if start in text:
        head, rest = text.split(start, 1)
        if TABLE_END in rest:
            tail = rest.split(TABLE_END, 1)[1]
            path.write_text(f"{head}{start}\n{table}\n{TABLE_END}{tail}")


def check(entries, quantizations, data_dir=None):
    """Re-exports into a temporary folder; prints differences; returns 1 if any."""
    problems = []
    with tempfile.TemporaryDirectory() as folder:
        for entry in entries:
            for quantization in quantizations:
                shipped = HERE / file_name(entry.name, quantization)
                if not shipped.is_file():
                    problems.append(f"{shipped.name}: missing")
                    continue
                spec = export_one(entry, quantization, folder, data_dir)
                fresh = Path(folder) / spec["file"]
                if structure(fresh) != structure(shipped):
                    problems.append(f"{shipped.name}: structure differs from a fresh export")
                elif float_constants_differ(fresh, shipped):
                    problems.append(f"{shipped.name}: float constants differ from a fresh "
                                    f"export by more than one ULP")
                print(f"{shipped.name}: checked", flush=True)
    print("\n".join(problems) or "all shipped files match a fresh export")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
