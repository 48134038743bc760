"""What machine a benchmark ran on, for its results files."""

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
