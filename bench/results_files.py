"""What a benchmark writes: bench/results/<name>.json (its rows, the machine, the date and the
method) and <name>.md (the table under one line saying where, when and how), and the rows a
long benchmark keeps in its run directory so that an interrupted run resumes where it stopped.
"""

import json
import time
from pathlib import Path

from lru_keras import atomic, environment

RESULTS = Path(__file__).parent / "results"
ROWS_FILE = "rows.json"


def write_results(name, method, rows, table, out=RESULTS, **extra):
    """Writes `out/<name>.json` ({"machine", "date", "method", **extra, "results": rows}) and
    `out/<name>.md` (`table`, a Markdown table, under the machine, date and method), each
    atomically. Returns the JSON report."""
    report = {"machine": environment.describe(), "date": time.strftime("%Y-%m-%d"),
              "method": method, **extra, "results": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / f"{name}.json", json.dumps(report, indent=1) + "\n")
    machine = report["machine"]
    atomic.write_text(out / f"{name}.md", f"{machine['cpu']}, {machine['cpus']} cores, "
                                          f"{report['date']}; {method}.\n\n{table}")
    return report


def load_rows(run_dir):
    """The rows kept in `run_dir` so far ({key: row or rows}; {} for a new run); creates the
    directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    kept = run_dir / ROWS_FILE
    return json.loads(kept.read_text()) if kept.is_file() else {}


def save_rows(run_dir, rows):
    """Keeps `rows` (see `load_rows`) in `run_dir`, atomically: a run stopped at any point
    resumes from the last row saved."""
    atomic.write_text(run_dir / ROWS_FILE, json.dumps(rows, indent=1) + "\n")
