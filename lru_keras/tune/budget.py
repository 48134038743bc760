"""Device budgets of a search: parameters, MFLOPs and measured int8 TFLite latency.

A trial is measured before it trains (`measure`); a trial over budget is not trained but
recorded as infeasible with what was measured and why (`Budget.violations`, e.g.
"params 210.3k > 200k"), so the results table shows every trial the search drew. Params and
MFLOPs are counted as the paper counts them (`lru_keras.analysis`: trainable parameters,
shared weights once; multiply-accumulates of conv and dense layers per image). Latency is
the median batch-1 time of the model exported to full-integer int8 .tflite and run with
LiteRT's interpreter (XNNPACK, one thread), as a phone would run it; it is measured only
when a latency budget is set and the other budgets are met, since exporting takes seconds.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path

from lru_keras import analysis
from lru_keras.validation import require_positive_int

LATENCY_RUNS = 100
LATENCY_WARMUP = 10
LATENCY_THREADS = 1
LATENCY_FILE = "model.int8.tflite"
# Measurements and their budget fields, in the order a check reads them.
LIMITS = (("params", "max_params"), ("mflops", "max_mflops"), ("latency_ms", "max_latency_ms"))


@dataclasses.dataclass(frozen=True)
class Budget:
    """Upper limits a model must meet to count; None: no limit.

    max_params: trainable parameters (BatchNorm included, shared weights counted once).
    max_mflops: millions of multiply-accumulates per image.
    max_latency_ms: median batch-1 latency of the int8 .tflite, in ms (LiteRT, one thread).
    """

    max_params: int | None = None
    max_mflops: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self):
        if self.max_params is not None:
            require_positive_int("max_params", self.max_params)
        for name in ("max_mflops", "max_latency_ms"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, numbers.Real) or not value > 0):
                raise ValueError(f"{name}={value!r} must be a positive number")

    def violations(self, measured: dict) -> list[str]:
        """What `measured` (params, mflops, latency_ms) exceeds, e.g. ["params 210.3k > 200k"]."""
        over = []
        for key, field in LIMITS:
            limit, value = getattr(self, field), measured.get(key)
            if limit is not None and value is not None and value > limit:
                over.append(f"{_LABELS[key]} {_FORMATS[key](value)} > {_FORMATS[key](limit)}")
        return over

    def status(self, measured: dict) -> str:
        """"ok", or "infeasible (params 210.3k > 200k)" naming every limit exceeded."""
        over = self.violations(measured)
        return f"infeasible ({'; '.join(over)})" if over else "ok"

    def describe(self) -> str:
        """The limits as text, e.g. "params <= 200k, MFLOPs <= 30" ("none" without any)."""
        limits = [f"{_LABELS[key]} <= {_FORMATS[key](getattr(self, field))}"
                  for key, field in LIMITS if getattr(self, field) is not None]
        return ", ".join(limits) or "none"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(model, budget: Budget, *, workdir, calibration_images, dataset,
            data_dir=None) -> dict:
    """{"params", "mflops", "latency_ms"} of a built Keras model; latency_ms is None unless
    `budget` limits latency and the other limits are met. The int8 file goes to
    `workdir`/model.int8.tflite (beside its .json spec), calibrated on `calibration_images`."""
    measured = {"params": analysis.count_parameters(model)["trainable"],
                "mflops": analysis.count_macs(model) / 1e6, "latency_ms": None}
    if budget.max_latency_ms is not None and not budget.violations(measured):
        measured["latency_ms"] = int8_latency_ms(model, Path(workdir) / LATENCY_FILE,
                                                 calibration_images, dataset, data_dir)
    return measured


def int8_latency_ms(model, path, calibration_images, dataset, data_dir=None) -> float:
    """Median batch-1 latency (ms) of `model` exported to a full-integer int8 .tflite."""
    from lru_keras import tflite
    from lru_keras.tflite import runtime

    tflite.export(model, path, "int8", representative_data=calibration_images,
                  dataset=dataset, calibration_size=len(calibration_images), data_dir=data_dir)
    timing = runtime.latency(path, num_threads=LATENCY_THREADS, runs=LATENCY_RUNS,
                             warmup=LATENCY_WARMUP)
    return timing["median_ms"]


def format_count(value) -> str:
    """210282 -> "210.3k", 200000 -> "200k", 1500000 -> "1.5M"."""
    if value >= 1e6:
        return f"{value / 1e6:.4g}M"
    if value >= 1e3:
        return f"{value / 1e3:.4g}k"
    return f"{value:g}"


_LABELS = {"params": "params", "mflops": "MFLOPs", "latency_ms": "latency"}
_FORMATS = {"params": format_count, "mflops": lambda v: f"{v:.4g}",
            "latency_ms": lambda v: f"{v:.3g} ms"}
