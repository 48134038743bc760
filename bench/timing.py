"""Wall-clock timing shared by the benchmarks: a warm-up call, then timed calls."""

import time


def call_seconds(run, repeats):
    """Seconds taken by each of `repeats` calls of `run`, after one untimed warm-up call
    (tracing and first-call allocation stay out of the figures)."""
    run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds
