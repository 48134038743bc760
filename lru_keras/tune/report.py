"""The results of a search: one row per trial, as Markdown, CSV, JSON and a PNG plot.

A row holds the trial's hyperparameters (N, width, dropout, shuffle, epochs), what it costs
(params, MFLOPs, int8 latency when measured), its best validation accuracy and its status:
"ok", "infeasible (params 210.3k > 200k)" for a trial over budget (measured, never trained,
so it has no accuracy), or KerasTuner's status of a trial that is still running. The plot is
the paper's Table 2 as a picture: validation accuracy against N and against MFLOPs.
`format_files` lists what a search wrote, its TensorBoard folder as the command that shows it.
"""

from __future__ import annotations

import csv
import math
import shlex
from pathlib import Path

from lru_keras import analysis, atomic
from lru_keras.train import run_dir
from lru_keras.tune.budget import Budget

TABLE_MD = "results.md"
TABLE_CSV = "results.csv"
TABLE_JSON = "results.json"
PLOT = "results.png"
COLUMNS = ("trial", "reuse", "width", "dropout", "shuffle", "epochs", "params", "mflops",
           "latency_ms", "val_accuracy", "status")
INFEASIBLE_METRIC = "infeasible"
# The entry of a search's files that is its TensorBoard folder (per-trial runs, HParams).
TENSORBOARD = "tensorboard"


def trial_rows(trials, budget: Budget, epochs: int) -> list[dict]:
    """One row per KerasTuner trial (sorted by trial id); `epochs`: the search's epochs
    (Hyperband trials carry their own)."""
    rows = []
    for trial in sorted(trials, key=lambda t: t.trial_id):
        values = trial.hyperparameters.values
        measured = {name: _metric(trial, name) for name in ("params", "mflops", "latency_ms")}
        if measured["params"] is not None:
            measured["params"] = round(measured["params"])
        infeasible = _metric(trial, INFEASIBLE_METRIC) == 1.0
        if trial.status != "COMPLETED":
            status = trial.status.lower()
        else:
            status = budget.status(measured) if infeasible else "ok"
        rows.append({
            "trial": trial.trial_id, "reuse": values.get("reuse"), "width": values.get("width"),
            "dropout": values.get("dropout"), "shuffle": values.get("shuffle"),
            "epochs": values.get("tuner/epochs", epochs), **measured,
            "val_accuracy": None if infeasible else _metric(trial, "val_accuracy"),
            "status": status,
        })
    return rows


def best_row(rows: list[dict]) -> dict | None:
    """The "ok" row with the highest validation accuracy (the first of equals), or None."""
    feasible = [row for row in rows if row["status"] == "ok" and row["val_accuracy"] is not None
                and not math.isnan(row["val_accuracy"])]
    return max(feasible, key=lambda row: row["val_accuracy"], default=None)


def _metric(trial, name):
    return float(trial.metrics.get_last_value(name)) if trial.metrics.exists(name) else None


def _cells(row: dict, latency: bool) -> list[str]:
    cells = [row["trial"], str(row["reuse"]), f"{row['width']:g}", f"{row['dropout']:g}",
             "on" if row["shuffle"] else "off", str(row["epochs"]), _number(row["params"], ",d"),
             _number(row["mflops"], ".3f")]
    if latency:
        cells.append(_number(row["latency_ms"], ".3f"))
    accuracy = row["val_accuracy"]
    cells += ["-" if accuracy is None else f"{100 * accuracy:.2f}", row["status"]]
    return cells


def _number(value, spec) -> str:
    return "-" if value is None else format(value, spec)


def _header(latency: bool) -> list[str]:
    header = ["trial", "N", "width", "dropout", "shuffle", "epochs", "params", "MFLOPs"]
    return header + (["latency ms"] if latency else []) + ["val accuracy %", "status"]


def _has_latency(rows, budget: Budget) -> bool:
    return budget.max_latency_ms is not None or any(r["latency_ms"] is not None for r in rows)


def format_text(rows: list[dict], budget: Budget) -> str:
    """The rows as an aligned plain-text table for the terminal."""
    latency = _has_latency(rows, budget)
    header = _header(latency)
    numeric = range(1, len(header) - 1)
    return analysis.format_table(header, [_cells(row, latency) for row in rows],
                                 align_right=tuple(numeric))


def format_markdown(rows: list[dict], budget: Budget, title: str) -> str:
    """The rows as a Markdown table under `title`, with the budget and the best trial."""
    latency = _has_latency(rows, budget)
    header = _header(latency)
    best = best_row(rows)
    lines = [f"# {title}", "", f"Budget: {budget.describe()}. Params: trainable parameters "
             f"(shared weights once); {analysis.MFLOPS_CONVENTION}.", "",
             analysis.format_markdown_table(header, [_cells(row, latency) for row in rows],
                                            align_right=range(1, len(header) - 1))]
    lines += ["", f"Best: trial {best['trial']}" if best else "Best: none (no trial within the "
                                                               "budget completed)", ""]
    return "\n".join(lines)


def format_files(files: dict) -> str:
    """One line per file a search wrote, "name: path"; the TensorBoard folder's line is the
    command that shows it, since a folder of event files is read through TensorBoard."""
    lines = []
    for name, path in files.items():
        if name == TENSORBOARD:
            path = (f"tensorboard --logdir {shlex.quote(str(path))}  (per-trial curves, "
                    f"HParams dashboard)")
        lines.append(f"{name}: {path}")
    return "\n".join(lines)


def write_tables(directory, rows: list[dict], budget: Budget, title: str, extra: dict) -> dict:
    """results.md, results.csv and results.json (rows, best, and `extra`) in `directory`;
    returns {"table_md", "table_csv", "table_json"} paths."""
    directory = Path(directory)
    files = {"table_md": directory / TABLE_MD, "table_csv": directory / TABLE_CSV,
             "table_json": directory / TABLE_JSON}
    atomic.write_text(files["table_md"], format_markdown(rows, budget, title))
    with atomic.replacing(files["table_csv"]) as temporary, \
            open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    run_dir.write_json(files["table_json"], {**extra, "budget": budget.to_dict(),
                                             "best": best_row(rows), "rows": rows})
    return {name: str(path) for name, path in files.items()}


def plot(path, rows: list[dict], budget: Budget, title: str, chance: float) -> str:
    """Writes `results_figure` as a PNG to `path`; returns the path."""
    figure = results_figure(rows, budget, title, chance)
    with atomic.replacing(path) as temporary:
        figure.savefig(temporary, format="png")
    return str(path)


def results_figure(rows: list[dict], budget: Budget, title: str, chance: float):
    """Two panels: validation accuracy (%) vs N and vs MFLOPs, one series per width and
    shuffle setting, the best trial starred, the MFLOPs budget as a dashed line and `chance`
    (the accuracy of guessing, %) as a dotted one: a search whose trials all sit there learned
    nothing, however spread their points look."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    trained = [row for row in rows if row["val_accuracy"] is not None]
    over = sum(row["status"].startswith("infeasible") for row in rows)
    best = best_row(rows)
    figure = Figure(figsize=(10, 4), dpi=100)
    panels = ((1, "reuse", "N (reuses per block)"), (2, "mflops", "MFLOPs"))
    for position, key, label in panels:
        axes = figure.add_subplot(1, 2, position)
        series = sorted({(row["width"], row["shuffle"]) for row in trained}, reverse=True)
        for width, shuffle in series:
            points = sorted((row[key], 100 * row["val_accuracy"]) for row in trained
                            if (row["width"], row["shuffle"]) == (width, shuffle))
            axes.plot(*zip(*points), marker="o" if shuffle else "s", linestyle="none",
                      label=f"width {width:g}, shuffle {'on' if shuffle else 'off'}")
        if best is not None:
            axes.plot([best[key]], [100 * best["val_accuracy"]], marker="*", markersize=14,
                      color="gold", markeredgecolor="black", linestyle="none",
                      label=f"best: trial {best['trial']}")
        if key == "mflops" and budget.max_mflops is not None:
            axes.axvline(budget.max_mflops, color="gray", linestyle="--",
                         label=f"budget {budget.max_mflops:g} MFLOPs")
        if key == "reuse" and trained:
            axes.set_xticks(sorted({row["reuse"] for row in trained}))
        axes.axhline(chance, color="gray", linestyle=":", label=f"chance {chance:.3g}%")
        axes.set_xlabel(label, fontsize=10)
        axes.set_ylabel("validation accuracy %", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=9)
    note = f"; {over} trial(s) over budget, not trained" if over else ""
    figure.suptitle(f"{title} (budget: {budget.describe()}{note})", fontsize=10)
    figure.tight_layout()
    return figure
