"""`lru-keras compare` and `lru_keras.compare`: every registered model of a dataset side by
side, measured on the shipped .tflite files of tflite/.

The fast tier runs the command once on 200 Fashion-MNIST test images with 5 latency rounds
(about 20 s) and checks its JSON, table and plot; the errors are checked without any slow
work. The slow tier runs all three datasets on 1000 test images each.
"""

import contextlib
import io
import json
import math
import os
import struct

import pytest

from lru_keras import analysis, zoo
from lru_keras.cli import main
from lru_keras.compare import (
    FAMILIES, NOT_AVAILABLE, SHIPPED_TFLITE, compare, family, format_compare, plot_compare,
    short_name)
from lru_keras.tflite import runtime
from lru_keras.tflite.options import zoo_file_name

ROW_FIELDS = {"name", "builder", "family", "params", "mflops", "keras_accuracy",
              "recorded_accuracy", "int8_size_bytes", "int8_accuracy", "int8_latency_ms",
              "int8_latency_min_ms", "float16_size_bytes", "int8_arena_bytes"}
ENVIRONMENT_FIELDS = {"tensorflow", "keras", "ai_edge_litert", "cpu", "cpus", "platform",
                      "TF_ENABLE_ONEDNN_OPTS"}
FAST_IMAGES = 200
# How far below its recorded full-test-set accuracy a correct model may score on the first n
# test images. The standard error of an accuracy p measured on n images is sqrt(p(1-p)/n):
# for n=200 and the Fashion-MNIST models (p = 0.90-0.94) at most 2.1 points, so 6 points is
# about 3 standard errors (a correct model fails with probability ~0.1%), while a model with
# wrong weights or preprocessing falls far below (chance is 10%). For n=1000 and the worst
# case, CIFAR-100 (p = 0.60-0.70), the standard error is at most 1.6 points: 5 points.
ACCURACY_SLACK = {200: 6.0, 1000: 5.0}
# The int8 files lose at most 0.9 points on the full test sets (tflite/manifest.json); on
# 200 images a loss of 4 points (8 images) would mean a broken file or input quantization.
INT8_SLACK = 4.0


def run(*argv):
    """(exit status, stdout, stderr) of `lru-keras argv...`, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def fashion(prepared_datasets, tmp_path_factory):
    """One `lru-keras compare --dataset fashion_mnist --json --plot` run on 200 test images:
    {"status", "result" (the parsed stdout), "stderr", "plot" (path)}."""
    plot = tmp_path_factory.mktemp("compare") / "fashion_mnist.png"
    status, out, err = run("compare", "--dataset", "fashion_mnist", "--limit", str(FAST_IMAGES),
                           "--latency-runs", "5", "--json", "--plot", str(plot))
    assert status == 0, err
    return {"result": json.loads(out), "stderr": err, "plot": plot}


def test_a_row_with_every_field_for_every_registered_model(fashion):
    result = fashion["result"]
    entries = zoo.list_weights(dataset="fashion_mnist")
    assert sum(entry.provenance == "ported" for entry in entries) == 6
    assert result["dataset"] == "fashion_mnist" and result["test_images"] == FAST_IMAGES
    assert set(result["environment"]) == ENVIRONMENT_FIELDS
    assert [row["name"] for row in result["rows"]] == [entry.name for entry in entries]
    for row, entry in zip(result["rows"], entries):
        assert set(row) == ROW_FIELDS
        assert row["builder"] == entry.builder
        assert row["family"] == ("layer reuse" if entry.builder == "LruNet" else "baseline")
        assert row["recorded_accuracy"] == entry.accuracy
    assert {row["family"] for row in result["rows"]} == {"layer reuse", "baseline"}


@pytest.mark.parametrize("builder, arguments, expected", [
    ("LruNet", {"reuse": 3, "width": 0.25}, "layer reuse"),
    ("LruNet", {"reuse": 1, "width": 0.25}, "layer reuse"),
    ("ConvMixer", {"width": 32, "depth": 4, "sharing": "full"}, "kernel sharing"),
    ("ConvMixer", {"width": 32, "depth": 4, "sharing": 2}, "kernel sharing"),
    ("ConvMixer", {"width": 32, "depth": 4, "sharing": "none"}, "baseline"),
    ("SEResNet", {"depth": 2, "widths": (8, 16, 32), "share_stages": (3,)}, "kernel sharing"),
    ("SEResNet", {"depth": 2, "widths": (8, 16, 32), "share_stages": ()}, "baseline"),
    ("CifarMobileNet", {"width": 0.25}, "baseline"),
])
def test_the_family_of_a_model_is_how_it_shares(builder, arguments, expected):
    """Read from the built model (a layer reusing its convs; a conv layer called at several
    places), whatever the builder."""
    model = zoo.get_builder(builder)(weights=None, classes=10, **arguments)
    assert family(model) == expected and expected in FAMILIES


def test_params_and_mflops_are_those_of_the_built_models(fashion):
    for row in fashion["result"]["rows"]:
        model = zoo.create(row["name"], weights=None)
        assert row["params"] == analysis.count_parameters(model)["trainable"]
        assert math.isclose(row["mflops"], analysis.count_macs(model) / 1e6)


def test_accuracies_are_near_the_recorded_ones(fashion):
    for row in fashion["result"]["rows"]:
        assert row["keras_accuracy"] >= row["recorded_accuracy"] - ACCURACY_SLACK[FAST_IMAGES], row
        assert abs(row["int8_accuracy"] - row["keras_accuracy"]) <= INT8_SLACK, row


def test_sizes_and_latencies_are_of_the_shipped_files(fashion):
    for row in fashion["result"]["rows"]:
        for quantization in ("int8", "float16"):
            path = SHIPPED_TFLITE / zoo_file_name(row["name"], quantization)
            assert row[f"{quantization}_size_bytes"] == os.path.getsize(path)
        int8_file = SHIPPED_TFLITE / zoo_file_name(row["name"], "int8")
        spec = json.loads(int8_file.with_suffix(".json").read_text())
        assert row["int8_arena_bytes"] == spec["micro"]["arena_bytes"]
        assert 0 < row["int8_latency_min_ms"] <= row["int8_latency_ms"] < 1000


def test_progress_goes_to_stderr_one_line_per_model(fashion):
    lines = [line for line in fashion["stderr"].splitlines() if line.startswith("compare: ")]
    models = len(zoo.list_weights(dataset="fashion_mnist"))
    assert len(lines) == models + 1  # the models, then the latency measurement
    assert "lrunet1_1x.fashion_mnist: Keras" in lines[0] and "interleaved" in lines[-1]


def test_the_table_has_a_row_per_model_and_bold_bests(fashion):
    result = fashion["result"]
    table = format_compare(result)
    lines = table.splitlines()
    assert lines[0].startswith("| model | params | MFLOPs | Keras acc. % | int8 acc. %")
    assert lines[1] == "|---|" + "---:|" * 8 and lines[0].endswith("| int8 MCU RAM KB |")
    for row, line in zip(result["rows"], lines[2:8]):
        assert line.startswith(f"| {short_name(row, 'fashion_mnist')} |")
    smallest = min(result["rows"], key=lambda row: row["params"])
    assert f"**{smallest['params']:,}**" in table
    assert "first 200 test images" in table


def test_a_file_tflm_cannot_load_has_no_mcu_ram_and_the_best_is_of_the_others(fashion):
    rows = [dict(row) for row in fashion["result"]["rows"]]
    rows[0]["int8_arena_bytes"] = None  # as for a ConvMixer's int8 file (GELU)
    table = format_compare({**fashion["result"], "rows": rows})
    lines = table.splitlines()
    assert lines[2].endswith(f"| {NOT_AVAILABLE} |")
    best = min(row["int8_arena_bytes"] for row in rows[1:]) / 1e3
    assert any(line.endswith(f"| **{best:.1f}** |") for line in lines[3:8])


def test_the_plot_is_a_png(fashion, tmp_path):
    content = fashion["plot"].read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", content[16:24])  # the IHDR chunk
    assert (width, height) == (1200, 500)
    again = plot_compare(fashion["result"], tmp_path / "again.png")
    assert again == str(tmp_path / "again.png") and os.path.getsize(again) > 10_000


def test_missing_tflite_files_are_named_before_any_work(tmp_path):
    status, out, err = run("compare", "--dataset", "fashion_mnist", "--tflite-dir", str(tmp_path))
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "lrunet1_1x.fashion_mnist.int8.tflite" in err
    assert "python tflite/make_tflite.py --only lrunet1_1x.fashion_mnist" in err


@pytest.mark.parametrize("argv, named", [
    (["--dataset", "mnist"], "--dataset"),
    (["--dataset", "fashion_mnist", "--limit", "0"], "--limit"),
    (["--dataset", "fashion_mnist", "--plot", "/no/such/folder/plot.png"], "/no/such/folder"),
    (["--dataset", "fashion_mnist", "--plot", "plot.jpg"], ".png"),
])
def test_bad_arguments_exit_2_naming_them(argv, named):
    status, out, err = run("compare", *argv)
    assert status == 2 and out == "" and named in err and "Traceback" not in err


@pytest.mark.parametrize("kwargs, named", [
    (dict(dataset="mnist"), "`dataset`"),
    (dict(dataset="cifar10", limit=0), "`limit`"),
    (dict(dataset="cifar10", latency_runs=0), "`latency_runs`"),
])
def test_compare_refuses_bad_arguments(kwargs, named):
    with pytest.raises(ValueError, match=named):
        compare(**kwargs)


def test_latencies_are_interleaved_per_model_in_order():
    files = [SHIPPED_TFLITE / zoo_file_name(name, "int8")
             for name in ("lrunet1_1x.fashion_mnist", "lrunet1_1x.cifar10")]
    timings = runtime.latencies(files, runs=3, warmup=1)
    assert [timing["runs"] for timing in timings] == [3, 3]
    assert all(0 < timing["min_ms"] <= timing["median_ms"] for timing in timings)
    assert set(runtime.latency(files[0], runs=3, warmup=0)) == set(timings[0])
    with pytest.raises(ValueError, match="no models"):
        runtime.latencies([])


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "fashion_mnist"])
def test_compare_every_dataset_on_1000_images(prepared_datasets, dataset):
    result = compare(dataset, limit=1000, latency_runs=10, progress=False)
    entries = zoo.list_weights(dataset=dataset)
    assert [row["name"] for row in result["rows"]] == [entry.name for entry in entries]
    assert result["test_images"] == 1000
    for row in result["rows"]:
        assert set(row) == ROW_FIELDS
        assert row["keras_accuracy"] >= row["recorded_accuracy"] - ACCURACY_SLACK[1000], row
