"""A progress line at least every few seconds for long work that reports nothing itself.

A TFLite conversion with int8 calibration, or a child process that imports TensorFlow, builds
a model and compiles its first training step, runs for minutes without a word. `Ticker` says
what is being done when it starts, and again every `every` seconds with the time spent, until
it is stopped, so that a user sees the work is alive and where it is.
"""

from __future__ import annotations

import sys
import threading
import time


class Ticker:
    """Prints `<prefix>: <status>` when the status is said, and `<prefix>: <status> (<n> s)`
    whenever `every` seconds pass without a line, from `start()` (or entering `with`) until
    `stop()` (or leaving it). Lines go to `stream` (default: sys.stderr at each line);
    `enabled=False` prints nothing, so that callers need no second code path for silence."""

    def __init__(self, prefix: str, status: str, *, every: float = 10.0, stream=None,
                 enabled: bool = True):
        self.prefix, self.every, self.stream, self.enabled = prefix, every, stream, enabled
        self._status = status
        self._started = self._last = 0.0
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="progress-ticker", daemon=True)

    def __enter__(self) -> Ticker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> Ticker:
        """Prints the first status and starts the periodic lines; returns self."""
        if self.enabled:
            self._started = time.monotonic()
            self.say(self._status)
            self._thread.start()
        return self

    def say(self, status: str, *, now: bool = True) -> None:
        """Makes `status` the current status, printed now (or, with `now=False`, in the next
        periodic line: for a status that changes often, such as the step of an epoch)."""
        with self._lock:
            self._status = status
            if now and self.enabled:
                self._print(status)

    def stop(self) -> None:
        """Ends the periodic lines (idempotent)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(max(0.0, self._last + self.every - time.monotonic())):
            with self._lock:
                if time.monotonic() - self._last >= self.every:
                    elapsed = time.monotonic() - self._started
                    self._print(f"{self._status} ({elapsed:.0f} s)")

    def _print(self, text: str) -> None:
        print(f"{self.prefix}: {text}", file=self.stream or sys.stderr, flush=True)
        self._last = time.monotonic()


class FitProgress:
    """Mixin for a Keras callback class (Keras 3's or tf_keras's): after every training step,
    makes `<what>: epoch e/E, step s/S, loss L` the status of `ticker`, printed with its next
    periodic line (so a log file gets a line every ~10 s, not one per step)."""

    def __init__(self, ticker: Ticker, what: str):
        super().__init__()
        self.ticker, self.what = ticker, what
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        steps = self.params.get("steps")
        loss = (logs or {}).get("loss", float("nan"))
        self.ticker.say(f"{self.what}: epoch {self.epoch + 1}/{self.params['epochs']}, step "
                        f"{batch + 1}{f'/{steps}' if steps else ''}, loss {float(loss):.4g}",
                        now=False)

    def on_test_begin(self, logs=None):
        self.ticker.say(f"{self.what}: epoch {self.epoch + 1}/{self.params['epochs']}, "
                        f"validating", now=False)
