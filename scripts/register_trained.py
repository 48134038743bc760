"""Registers the weights of a finished `lru-keras train` run in the zoo: the record of every
trained entry (a development tool, not installed; the ported entries are
scripts/convert_reference.py's).

    python scripts/register_trained.py RUN_DIR --name NAME [--pilot PILOT_RUN_DIR ...]
        [--aim PERCENT --budget-hours HOURS]

RUN_DIR is a finished run (summary.json written) started with scripts/timed_train.sh, whose
wall-time log RUN_DIR.wall gives the card its command, wall time and CPU. NAME is
`<model>.<dataset>`, the run's dataset. Everything is checked before anything is written:
the run finished and its files agree with their checksums, the log holds this run's command,
the name is free (or already a trained entry, which is replaced), and the weights load into
the zoo's model of that entry.

Writes, in zoo/: `NAME.weights.h5` (the run's best.weights.h5: the epoch selected on the
validation split), `trained/NAME/` (log.csv, curves.png, and the same of each pilot run under
`pilots/<run>/`), the card `cards/NAME.md`, and the manifest entry, provenance "trained",
whose accuracy is the registered file's, evaluated here once on the full test split through
`lru_keras.zoo.create(NAME)`: what tests/test_trained_weights.py reproduces.
"""

import argparse
import csv
import inspect
import json
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from lru_keras import analysis, checksums, evaluate, zoo
from lru_keras.data import catalog, pipeline
from lru_keras.train import run_dir as run_files
from zoo_manifest import INPUT_RANGE, ZOO, hub_header, layer_names, read_entries, write_entries

AUTHOR = "lru_keras contributors (trained with lru-keras train)"
LICENSE = "MIT"
# Builder arguments that do not change the weights: left out of the entry's `arguments`.
NOT_ARCHITECTURE = {"dropout"}
TAGS = {"ConvMixer": ("lru_keras", "kernel-sharing"), "LruNet": ("lru_keras", "layer-reuse")}


class RegistrationError(ValueError):
    """A run, a pilot or a name that cannot be registered; says which and why."""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help="<model>.<dataset>")
    parser.add_argument("--pilot", type=Path, action="append", default=[],
                        help="a pilot run that chose the recipe (repeatable)")
    parser.add_argument("--aim", type=float, help="the test accuracy aimed at, percent")
    parser.add_argument("--budget-hours", type=float, help="the wall-time budget of the aim")
    parser.add_argument("--estimate",
                        help="required when the aim is not met: what the aim would need "
                             "(epochs, hours) and how that was estimated")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the card (what the numbers alone do not say)")
    parser.add_argument("--wall-log", type=Path,
                        help="the timed_train.sh log (default: RUN_DIR.wall)")
    parser.add_argument("--data-dir", help="the prepared datasets (default: lru_keras's)")
    args = parser.parse_args(argv)
    try:
        entry = register(args.run_dir, args.name, args.pilot, aim=args.aim,
                         budget_hours=args.budget_hours, estimate=args.estimate, notes=args.note,
                         wall_log=args.wall_log, data_dir=args.data_dir)
    except RegistrationError as error:
        sys.exit(f"register_trained: {error}")
    print(f"{entry['name']}: {entry['accuracy']:.2f}% test accuracy, card {entry['card']}")


def register(run, name, pilots=(), *, aim=None, budget_hours=None, estimate=None, notes=(),
             wall_log=None, data_dir=None):
    """Checks `run` and `pilots`, then writes the entry `name` (see the module doc); returns
    the manifest entry."""
    run = read_run(run, wall_log)
    pilot_runs = [read_run(pilot) for pilot in pilots]
    check_name(name, run["summary"]["dataset"])
    if (aim is None) != (budget_hours is None):
        raise RegistrationError("--aim and --budget-hours go together")
    model, arguments = build(run, name)
    model.load_weights(run["dir"] / run_files.BEST)
    result = evaluate.evaluate_dataset(model, run["summary"]["dataset"], data_dir=data_dir,
                                       progress=False)
    if result["images"] != run["summary"]["test_images"]:
        raise RegistrationError(f"{run['dir']}: tested on {run['summary']['test_images']} "
                                f"images; the full test split has {result['images']}")
    accuracy = round(100 * result["correct"] / result["images"], 2)
    if aim is not None and not aim_met(accuracy, run, aim, budget_hours) and not estimate:
        raise RegistrationError(
            f"{name}: {accuracy:.2f}% in {wall_hours(run):.2f} h misses the aim of "
            f"{aim:g}% in {budget_hours:g} h; --estimate must say what the aim would need")

    target = ZOO / "trained" / name
    shutil.rmtree(target, ignore_errors=True)
    copy_curves(run["dir"], target)
    for pilot in pilot_runs:
        copy_curves(pilot["dir"], target / "pilots" / pilot["dir"].name)
    file = f"{name}.weights.h5"
    shutil.copyfile(run["dir"] / run_files.BEST, ZOO / file)
    info = analysis.summary(model)
    entry = {
        "name": name, "builder": run["summary"]["builder"], "dataset": run["summary"]["dataset"],
        "arguments": arguments, "classes": model.output_shape[-1],
        "input_shape": list(model.input_shape[1:]), "input_range": list(INPUT_RANGE),
        **layer_names(run["summary"]["builder"]),
        "file": file, "sha256": checksums.sha256_of(ZOO / file), "accuracy": accuracy,
        "card": f"cards/{name}.md", "provenance": "trained", "author": AUTHOR,
        "license": LICENSE, "source": f"lru-keras train, run {run['dir'].name} "
                                      f"(zoo/trained/{name}/log.csv)",
    }
    (ZOO / "cards" / f"{name}.md").write_text(
        card(entry, run, pilot_runs, result, info, aim, budget_hours, estimate, notes))
    trained = [e for e in read_entries() if e["provenance"] == "trained" and e["name"] != name]
    write_entries(sorted([*trained, entry], key=lambda e: e["name"]), replace="trained")
    return entry


def read_run(path, wall_log=None):
    """{dir, config, summary, log (rows), attempts [(start, end, cpu, onednn, args)]} of a
    finished run; RegistrationError naming what is missing or damaged."""
    path = Path(path)
    summary_file = path / run_files.SUMMARY
    if not summary_file.is_file():
        raise RegistrationError(f"{path}: no {run_files.SUMMARY}: the run has not finished "
                                f"(resume it with the same command)")
    try:
        if not checksums.check_sidecar(path / run_files.BEST):
            raise RegistrationError(f"{path / run_files.BEST}: no .sha256 sidecar")
    except (OSError, checksums.ChecksumError) as error:
        raise RegistrationError(str(error)) from None
    for required in (run_files.LOG, run_files.CURVES, run_files.CONFIG):
        if not (path / required).is_file():
            raise RegistrationError(f"{path}: {required} is missing")
    try:
        summary = run_files.read_json(summary_file)
        config = run_files.read_json(path / run_files.CONFIG)
    except run_files.DamagedFileError as error:
        raise RegistrationError(str(error)) from None
    with open(path / run_files.LOG, newline="") as file:
        log = list(csv.DictReader(file))
    if len(log) != summary["epochs_run"]:
        raise RegistrationError(f"{path / run_files.LOG}: {len(log)} epochs, the summary says "
                                f"{summary['epochs_run']}")
    wall = Path(wall_log) if wall_log else path.parent / f"{path.name}.wall"
    return {"dir": path, "config": config, "summary": summary, "log": log,
            "attempts": read_wall_log(wall, path)}


WALL_START = re.compile(r"start (\d+) \S+ onednn=(\S+) cpu=\[(.*)\] args: (.*)")
WALL_END = re.compile(r"end (\d+) \S+ rc=(-?\d+)")


def read_wall_log(path, run):
    """The attempts of timed_train.sh in `path`: [(start, end, cpu, onednn, args)], seconds
    since the epoch; RegistrationError if there is none, one did not end, or the last one
    failed."""
    if not path.is_file():
        raise RegistrationError(f"{path}: no wall-time log (start the run with "
                                f"scripts/timed_train.sh, or give --wall-log)")
    attempts, start = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if match := WALL_START.fullmatch(line):
            if start:
                raise RegistrationError(f"{path}:{number}: an attempt started before the "
                                        f"previous one ended")
            start = match.groups()
        elif match := WALL_END.fullmatch(line):
            if not start:
                raise RegistrationError(f"{path}:{number}: an end without a start")
            attempts.append((int(start[0]), int(match[1]), start[2], start[1], start[3]))
            start = None
        elif line.strip():
            raise RegistrationError(f"{path}:{number}: not a timed_train.sh line: {line!r}")
    if start or not attempts:
        raise RegistrationError(f"{path}: the last attempt has not ended")
    if len({attempt[4] for attempt in attempts}) != 1:
        raise RegistrationError(f"{path}: the attempts ran different commands")
    return attempts


def check_name(name, dataset):
    if not re.fullmatch(r"[a-z0-9_.]+", name) or not name.endswith(f".{dataset}"):
        raise RegistrationError(f"--name {name!r}: expected <model>.{dataset}, lower case "
                                f"letters, digits, '_' and '.' (the run's dataset is {dataset})")
    for entry in read_entries():
        if entry["name"] == name and entry["provenance"] != "trained":
            raise RegistrationError(f"--name {name!r} is a {entry['provenance']} entry; "
                                    f"trained weights need a name of their own")


def build(run, name):
    """(the zoo's model for the run's weights, the entry's `arguments`): every argument of the
    builder that fixes the architecture, with the run's values."""
    summary = run["summary"]
    builder = zoo.get_builder(summary["builder"])
    parameters = inspect.signature(builder).parameters.values()
    arguments = {}
    for parameter in parameters:
        if parameter.kind is not parameter.POSITIONAL_OR_KEYWORD or \
                parameter.name in NOT_ARCHITECTURE:
            continue
        value = summary["model_args"].get(parameter.name, parameter.default)
        if value is parameter.empty:
            raise RegistrationError(f"{run['dir']}: the run gives no {parameter.name!r}")
        if isinstance(parameter.default, float) and isinstance(value, int):
            value = float(value)  # LruNet's width 1 is the zoo's 1.0
        arguments[parameter.name] = value
    spec = catalog.info(summary["dataset"])
    model = builder(**arguments, classes=spec.num_classes, input_shape=spec.image_shape,
                    weights=None, name=name.split(".")[0])
    if analysis.count_parameters(model)["trainable"] != summary["parameters"]:
        raise RegistrationError(f"{run['dir']}: the zoo's model of {arguments} does not have "
                                f"the run's {summary['parameters']} parameters")
    return model, arguments


def copy_curves(run, target):
    target.mkdir(parents=True)
    for file in (run_files.LOG, run_files.CURVES):
        shutil.copyfile(run / file, target / file)


def wall_hours(run):
    return sum(end - start for start, end, *_ in run["attempts"]) / 3600


def aim_met(accuracy, run, aim, budget_hours):
    return accuracy >= aim and wall_hours(run) <= budget_hours


def schedule_text(identity):
    warmup = identity.get("warmup_epochs") or 0
    return (f"{identity['schedule']}" + (f" after {warmup:g} warm-up epoch{'s' * (warmup != 1)}" if warmup else ""))


def dropout_text(dropout):
    """None: the builder has no dropout (ConvMixer)."""
    return "no dropout (the model has none)" if dropout is None else f"dropout {dropout:g}"


def card(entry, run, pilots, result, info, aim, budget_hours, estimate=None, notes=()):
    """The model card (Markdown under its hub header) of a trained entry."""
    name, summary, identity = entry["name"], run["summary"], run["config"]["identity"]
    attempts = run["attempts"]
    started = datetime.fromtimestamp(attempts[0][0], timezone.utc).strftime("%Y-%m-%d")
    oneDNN = "/".join(sorted({attempt[3] for attempt in attempts}))
    if oneDNN == "default":
        oneDNN = ("unset (oneDNN on: TensorFlow's default with AVX-512)"
                  if "avx512f" in attempts[0][2] else "unset (oneDNN off: TensorFlow's default)")
    best = summary["best_epoch"]
    hours = wall_hours(run)
    lines = [
        hub_header(name, entry["dataset"], entry["accuracy"],
                   TAGS.get(entry["builder"], ("lru_keras",))) + f"# {name}",
        "",
        f'`lru_keras.zoo.create("{name}")`: `{entry["builder"]}'
        f'({", ".join(f"{k}={v!r}" for k, v in entry["arguments"].items())})` trained on '
        f'{entry["dataset"]} with `lru-keras train`, on this project\'s 2-core CPU machine.',
        "",
        f"- Command (from the repository root, the run directory outside it):",
        f"  `scripts/timed_train.sh {run['dir'].name} {attempts[0][4]}`",
        f"- Recipe: {identity['recipe']}: SGD momentum {identity['momentum']:g}"
        f"{' (Nesterov)' if identity['nesterov'] else ''}, coupled weight decay "
        f"{identity['weight_decay']:g}, batch {identity['batch_size']}, peak lr "
        f"{identity['learning_rate']:g}, {schedule_text(identity)}, {identity['epochs']} "
        f"epochs, {dropout_text(identity['dropout'])}, "
        f"{f'augmented ({pipeline.AUGMENTATION})' if identity['augment'] else 'no augmentation'}.",
        f"- Seed {identity['seed']}; {summary['train_images']:,} training images, "
        f"{summary['validation_images']:,} held out for validation.",
        f"- Wall time: {hours:.2f} h in {len(attempts)} attempt(s), started {started}; CPU "
        f"{attempts[0][2]}, TF_ENABLE_ONEDNN_OPTS {oneDNN}; TensorFlow "
        f"{run['config']['environment']['tensorflow']}, Keras "
        f"{run['config']['environment']['keras']}.",
        f"- Selected: epoch {best + 1} of {summary['epochs_run']}, validation accuracy "
        f"{100 * summary['best_val_accuracy']:.2f}%. {summary['selection'].capitalize()}.",
        f"- Test accuracy: **{entry['accuracy']:.2f}%** ({result['correct']:,} of "
        f"{result['images']:,} images of {entry['dataset']}/test), this file through "
        f"`zoo.create`.",
    ]
    if aim is not None:
        if aim_met(entry["accuracy"], run, aim, budget_hours):
            outcome = "met"
        else:
            outcome = "not met (" + ", ".join(
                [f"{aim - entry['accuracy']:.2f} points short"] * (entry["accuracy"] < aim)
                + [f"{hours - budget_hours:.2f} h over"] * (hours > budget_hours)) + ")"
        lines.append(f"- Aim: ≥ {aim:g}% within ≤ {budget_hours:g} h: {outcome}.")
        if estimate:
            lines.append(f"- Estimate: {estimate}")
    lines += [
        f"- Parameters: {info['trainable_params']:,} trainable; {info['mflops']:.1f} MFLOPs "
        f"(multiply-accumulates) per image.",
        f"- Input: {tuple(entry['input_shape'])}, raw pixels in [0, 255] (the model rescales "
        f"to [0, 1]). Output: {entry['classes']} class probabilities.",
        f"- Curves: `trained/{name}/curves.png`, per-epoch log `trained/{name}/log.csv`.",
        f"- License: MIT (this project's); author: {AUTHOR}.",
        *(f"- {note}" for note in notes),
    ]
    if pilots:
        lines += ["", "## Pilot runs", "",
                  "Short runs on the validation split that chose the schedule; their curves "
                  f"are in `trained/{name}/pilots/`.", "",
                  "| run | schedule | epochs | validation % | test % | wall h |",
                  "|---|---|---:|---:|---:|---:|"]
        for pilot in pilots:
            p = pilot["config"]["identity"]
            lines.append(
                f"| {pilot['dir'].name} | {schedule_text(p)} | {p['epochs']} | "
                f"{100 * pilot['summary']['best_val_accuracy']:.2f} | "
                f"{100 * pilot['summary']['test_accuracy']:.2f} | {wall_hours(pilot):.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
