"""What a measurement ran on: library versions, CPU, oneDNN setting, for results files.

Timings and, in the last digits, accuracies depend on them, so a result without them cannot
be compared with another one.
"""

import importlib.metadata
import os
import platform
from pathlib import Path


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def describe():
    """{tensorflow, keras, ai_edge_litert (versions), cpu, cpus, platform,
    TF_ENABLE_ONEDNN_OPTS (None when unset: TensorFlow's own default)}."""
    versions = {name.replace("-", "_"): importlib.metadata.version(name)
                for name in ("tensorflow", "keras", "ai-edge-litert")}
    return {**versions, "cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
