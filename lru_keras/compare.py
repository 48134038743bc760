"""Every registered model of one dataset side by side: the layer-reuse LruNets and the
kernel-sharing models (a ConvMixer that shares its kernels) against the baselines
(MobileNet, ShuffleNet, an unshared ConvMixer), measured now on this machine.

Per registered weights entry of the dataset: trainable parameters and MFLOPs (the counting
conventions of `lru_keras.analysis`), Keras test accuracy measured now and as recorded, and
of its shipped .tflite files (as tflite/make_tflite.py writes them): the sizes, int8 test
accuracy with LiteRT, and int8 batch-1 latency on one thread (XNNPACK). Latencies are
measured interleaved over all models (`lru_keras.tflite.runtime.latencies`), so that the load
of a shared machine falls on every model alike and the column compares.

`compare` measures, `format_compare` makes the Markdown table, `plot_compare` the PNG.
"""

import os
import sys
from pathlib import Path

from lru_keras import analysis, atomic, data, environment, evaluate, extras, zoo
from lru_keras.validation import require_choice, require_positive_int

# The shipped .tflite files: the repository's tflite/ folder (not part of an installed package).
SHIPPED_TFLITE = Path(__file__).resolve().parents[1] / "tflite"
MAKE_TFLITE = SHIPPED_TFLITE / "make_tflite.py"
QUANTIZATIONS = ("int8", "float16")
FAMILIES = ("layer reuse", "kernel sharing", "baseline")
LATENCY_THREADS = 1  # batch-1 latency on one thread: what a phone app's single request sees
# Columns of the table: (header, row key, format, whether higher is better).
COLUMNS = (
    ("params", "params", "{:,}", False),
    ("MFLOPs", "mflops", "{:.2f}", False),
    ("Keras acc. %", "keras_accuracy", "{:.2f}", True),
    ("int8 acc. %", "int8_accuracy", "{:.2f}", True),
    ("int8 KB", "int8_size_bytes", "{:.1f}", False),
    ("float16 KB", "float16_size_bytes", "{:.1f}", False),
    ("int8 latency ms (median)", "int8_latency_ms", "{:.3f}", False),
    ("int8 MCU RAM KB", "int8_arena_bytes", "{:.1f}", False),
)
KILOBYTE_COLUMNS = ("int8_size_bytes", "float16_size_bytes", "int8_arena_bytes")
NOT_AVAILABLE = "n/a"  # a table cell without a value (the MCU RAM of a file TFLM cannot load)


def compare(dataset, *, tflite_dir=None, data_dir=None, limit=None, latency_runs=100,
            progress=True):
    """Measures every registered model of `dataset` (`lru_keras.zoo.list_weights`).

    Args:
        dataset: "cifar10", "cifar100" or "fashion_mnist", prepared in TFDS.
        tflite_dir: folder holding `{weights name}.int8.tflite` and `.float16.tflite` of
            every model; None: the checkout's tflite/ folder.
        data_dir: TFDS data dir (None: $TFDS_DATA_DIR or ~/tensorflow_datasets).
        limit: evaluate on the first `limit` test images only (None: the whole test set).
        latency_runs: timed rounds of the interleaved latency measurement.
        progress: one line per model on stderr.

    Every argument and every .tflite file is checked before the slow work starts (ValueError
    naming what is wrong; `lru_keras.data.DatasetNotAvailableError` if the dataset is not
    prepared). Returns {dataset, test_images, latency (how it was measured), environment
    (`lru_keras.environment.describe()`), rows}; a row per model: name, builder, family
    (`family`), params, mflops, keras_accuracy, recorded_accuracy,
    int8_size_bytes, int8_accuracy, int8_latency_ms (median), int8_latency_min_ms,
    float16_size_bytes, and with the [micro] extra int8_arena_bytes (the smallest TensorFlow
    Lite Micro arena of the int8 file: its RAM on a microcontroller; None if TFLM cannot
    load the file). Accuracies are
    percentages.
    """
    from lru_keras.tflite import runtime

    require_choice("dataset", dataset, sorted(data.DATASETS))
    if limit is not None:
        require_positive_int("limit", limit)
    require_positive_int("latency_runs", latency_runs)
    entries = zoo.list_weights(dataset=dataset)
    files = tflite_files([entry.name for entry in entries], tflite_dir)
    total = data.split_size(dataset, "test", data_dir)
    test_images = total if limit is None else min(total, limit)
    rows = []
    for entry in entries:
        rows.append(_measure(entry, files[entry.name], dataset, limit, data_dir))
        _say(progress, f"{len(rows)}/{len(entries)} {entry.name}: Keras "
                       f"{rows[-1]['keras_accuracy']:.2f}%, int8 {rows[-1]['int8_accuracy']:.2f}% "
                       f"on {test_images} test images")
    _say(progress, f"int8 latency: {latency_runs} interleaved rounds of {len(entries)} models")
    timings = runtime.latencies([files[entry.name]["int8"] for entry in entries],
                                num_threads=LATENCY_THREADS, runs=latency_runs, xnnpack=True)
    for row, timing in zip(rows, timings):
        row.update(int8_latency_ms=timing["median_ms"], int8_latency_min_ms=timing["min_ms"])
    return {
        "dataset": dataset, "test_images": test_images,
        "latency": {"batch": 1, "threads": LATENCY_THREADS, "delegate": "XNNPACK",
                    "runs": latency_runs, "interleaved": True},
        "environment": environment.describe(), "rows": rows,
    }


def tflite_files(names, tflite_dir=None):
    """{weights name: {quantization: path}} of the int8 and float16 files of `names` in
    `tflite_dir` (None: the checkout's tflite/ folder); ValueError naming the missing files
    and how to make them, or a damaged file (`runtime.read_model_file`), before any work."""
    from lru_keras.tflite.options import zoo_file_name
    from lru_keras.tflite.runtime import read_model_file

    if tflite_dir is None and not MAKE_TFLITE.is_file():
        raise ValueError(
            "tflite_dir: this installed package has no shipped .tflite files (they are in a "
            "checkout's tflite/ folder); give the folder that holds them.")
    folder = SHIPPED_TFLITE if tflite_dir is None else Path(tflite_dir)
    if not folder.is_dir():
        raise ValueError(f"tflite_dir {str(folder)!r} is not a folder.")
    files = {name: {quantization: folder / zoo_file_name(name, quantization)
                    for quantization in QUANTIZATIONS} for name in names}
    missing = [path.name for paths in files.values() for path in paths.values()
               if not path.is_file()]
    if missing:
        lacking = " ".join(name for name, paths in files.items()
                           if any(not path.is_file() for path in paths.values()))
        raise ValueError(
            f"tflite_dir {str(folder)!r} lacks {', '.join(missing)}: make them with `python "
            f"tflite/make_tflite.py --only {lacking}` in a checkout (it writes tflite/), or "
            f"give tflite_dir a folder that holds them.")
    for paths in files.values():
        for path in paths.values():
            read_model_file(path)
    return files


def family(model):
    """The family of a built model in the comparison, from how it shares weights: "layer
    reuse" (a layer that calls its own convs again, `lru_keras.layers.Reused` and LRUBlock),
    "kernel sharing" (a conv layer the model calls at more than one place, as
    `lru_keras.sharing.share_kernels` makes them) or "baseline"."""
    from lru_keras.layers.reuse import Reused
    from lru_keras.tflite import graph

    if any(isinstance(layer, Reused) for layer in graph.all_layers(model)):
        return FAMILIES[0]
    if graph.shared_layers(model):
        return FAMILIES[1]
    return FAMILIES[2]


def short_name(row, dataset):
    """The row's weights name without its dataset, e.g. "lrunet14_1x"."""
    return row["name"].removesuffix(f".{dataset}")


def _measure(entry, paths, dataset, limit, data_dir):
    """The row of one model, latency aside."""
    from lru_keras import tflite

    model = zoo.create(entry.name)
    keras_result = evaluate.evaluate_dataset(model, dataset, "test", limit=limit,
                                             data_dir=data_dir, progress=False)
    int8_result = tflite.evaluate(paths["int8"], dataset, "test", limit=limit,
                                  data_dir=data_dir, progress=False)
    return {
        "name": entry.name, "builder": entry.builder, "family": family(model),
        "params": analysis.count_parameters(model)["trainable"],
        "mflops": analysis.count_macs(model) / 1e6,
        "keras_accuracy": keras_result["accuracy"], "recorded_accuracy": entry.accuracy,
        "int8_size_bytes": os.path.getsize(paths["int8"]),
        "int8_accuracy": int8_result["accuracy"],
        "float16_size_bytes": os.path.getsize(paths["float16"]),
        **({"int8_arena_bytes": _arena(Path(paths["int8"]).read_bytes())}
           if extras.installed("tflite_micro") else {}),
    }


def _arena(content):
    """The int8 file's smallest TFLM arena; None if TFLM cannot load it (e.g. ConvMixer's GELU
    has no TFLM kernel)."""
    from lru_keras.tflite import micro

    try:
        return micro.smallest_arena(content)
    except micro.RefusedError:
        return None


def _say(progress, line):
    if progress:
        print(f"compare: {line}", file=sys.stderr, flush=True)


def format_compare(result):
    """The rows of `compare` as a Markdown table, the best value of each column in bold,
    with a note on what was measured."""
    rows = result["rows"]
    columns = [column for column in COLUMNS if all(column[1] in row for row in rows)]
    cells = [[short_name(row, result["dataset"])] for row in rows]
    for _, key, spec, higher in columns:
        values = [_shown_value(row, key) for row in rows]
        shown = [NOT_AVAILABLE if value is None else spec.format(value) for value in values]
        best = spec.format((max if higher else min)(v for v in values if v is not None))
        for row_cells, text in zip(cells, shown):
            row_cells.append(f"**{text}**" if text == best else text)
    header = ["model", *(title for title, *_ in columns)]
    table = analysis.format_markdown_table(header, cells, align_right=range(1, len(header)))
    latency = result["latency"]
    note = (f"{result['dataset']}, first {result['test_images']} test images. Params: "
            f"trainable, shared weights once; {analysis.MFLOPS_CONVENTION}. KB = 1000 bytes. "
            f"Latency: batch {latency['batch']}, {latency['threads']} thread, "
            f"{latency['delegate']}, median of {latency['runs']} runs interleaved over the "
            f"models (minimum in the JSON). "
            + ("MCU RAM: the smallest TensorFlow Lite Micro arena of the int8 file "
               f"({NOT_AVAILABLE}: TFLM cannot load it, e.g. no GELU kernel). "
               if any(key == "int8_arena_bytes" for _, key, *_ in columns) else "")
            + "Best value of each column in bold.")
    return f"{table}\n\n{note}"


def _shown_value(row, key):
    if row[key] is None:
        return None
    return row[key] / 1e3 if key in KILOBYTE_COLUMNS else row[key]


def check_plot_path(path):
    """`path` as a Path if it is a .png file name that can be written, else a ValueError
    naming it (checked before the minutes of measuring)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot path {str(path)!r} must end in .png.")
    return atomic.check_writable_file(path, "plot path")


def plot_compare(result, path):
    """PNG with two panels: Keras test accuracy against int8 latency (log axis: latencies
    span 30x) and against parameters, one marker per family, every point labelled; written
    atomically. Returns the path."""
    matplotlib = extras.require("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    path = check_plot_path(path)
    dataset, rows = result["dataset"], result["rows"]
    styles = dict(zip(FAMILIES, (dict(marker="o", color="tab:blue"),
                                 dict(marker="^", color="tab:green"),
                                 dict(marker="s", color="tab:orange"))))
    figure = Figure(figsize=(12, 5), dpi=100)
    FigureCanvasAgg(figure)  # a renderer, to measure the labels before placing them
    latency = result["latency"]
    panels = (("int8_latency_ms", 1, f"int8 latency, batch {latency['batch']}, "
                                     f"{latency['threads']} thread (ms, median)"),
              ("params", 1e3, "parameters (thousands)"))
    labelled = []
    for position, (key, scale, label) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, position)
        if key == "int8_latency_ms":
            axes.set_xscale("log")
            axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            axes.xaxis.set_minor_formatter(NullFormatter())
        for name in FAMILIES:
            points = [row for row in rows if row["family"] == name]
            if points:
                axes.plot([row[key] / scale for row in points],
                          [row["keras_accuracy"] for row in points], linestyle="none",
                          markersize=8, label=name, **styles[name])
        labelled.append((axes, [(row[key] / scale, row["keras_accuracy"],
                                 short_name(row, dataset)) for row in rows]))
        axes.set_xlabel(label, fontsize=10)
        axes.set_ylabel("Keras test accuracy (%)", fontsize=10)
        axes.tick_params(labelsize=9)
        axes.grid(alpha=0.3)
        axes.margins(x=0.2, y=0.15)
    figure.suptitle(f"{dataset}: accuracy on {result['test_images']} test images against "
                    f"latency and size", fontsize=11)
    # One legend for both panels (they show the same points), above them.
    figure.legend(*axes.get_legend_handles_labels(), loc="upper right", ncols=2, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.draw_without_rendering()  # fixes the axes' limits
    for axes, points in labelled:
        _label_points(axes, points)
    with atomic.replacing(path) as temporary:
        figure.savefig(temporary, format="png")
    return str(path)


# Where a point's label may go, tried in order: (dx, dy) in points from the point, and the
# text's horizontal and vertical alignment; first beside the marker, then lifted further up
# or down (joined to the point by a thin line) when points crowd.
LABEL_SIDES = tuple(
    side for lift in (0, 14, 28)
    for side in ((5, 4 + lift, "left", "bottom"), (5, -4 - lift, "left", "top"),
                 (0, 7 + lift, "center", "bottom"), (0, -7 - lift, "center", "top"),
                 (-5, 4 + lift, "right", "bottom"), (-5, -4 - lift, "right", "top")))


def _label_points(axes, points):
    """Labels each (x, y, text) point of `axes` (fontsize 9) on the first of `LABEL_SIDES`
    where the label stays inside the axes and clear of the other markers and of the labels
    placed before; if there is none, where it overlaps least. Needs the final layout: call
    after the figure is drawn."""
    from matplotlib.transforms import Bbox

    renderer = axes.figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    markers = [Bbox.from_extents(x - 8, y - 8, x + 8, y + 8)  # with room around
               for x, y in axes.transData.transform([(x, y) for x, y, _ in points])]
    labels = []

    def place(x, y, text, side, others):
        dx, dy, ha, va = side
        line = dict(arrowstyle="-", color="0.5", linewidth=0.6, shrinkA=0, shrinkB=5)
        label = axes.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              ha=ha, va=va, fontsize=9,
                              arrowprops=line if abs(dy) > 7 else None)
        box = label.get_window_extent(renderer).padded(2)
        inside = Bbox.intersection(box, frame)
        clash = box.width * box.height - (0 if inside is None else inside.width * inside.height)
        for other in others:
            common = Bbox.intersection(box, other)
            clash += 0 if common is None else common.width * common.height
        return label, box, clash

    for index, (x, y, text) in enumerate(points):
        others = markers[:index] + markers[index + 1:] + labels
        tried = []
        for side in LABEL_SIDES:
            label, box, clash = place(x, y, text, side, others)
            label.remove()
            tried.append((clash, side))
            if clash == 0:
                break
        _, box, _ = place(x, y, text, min(tried, key=lambda item: item[0])[1], others)
        labels.append(box)
