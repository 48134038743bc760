"""lru_keras.progress: Ticker, a line when a status is said, and again every `every` seconds
with the time spent, until stopped; FitProgress, the step of a `fit` as the status."""

import io
import re
import time

from lru_keras.progress import FitProgress, Ticker


def _wait_for_lines(stream, count, timeout=10.0):
    """The stream's lines once there are at least `count` (fails after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while len(lines := stream.getvalue().splitlines()) < count:
        assert time.monotonic() < deadline, f"only {lines} after {timeout} s"
        time.sleep(0.01)
    return lines


def test_ticker_says_each_status_and_repeats_it_with_the_time_spent():
    stream = io.StringIO()
    with Ticker("job", "starting", every=0.5, stream=stream) as ticker:
        first, repeated = _wait_for_lines(stream, 2)[:2]
        assert first == "job: starting" and re.fullmatch(r"job: starting \(\d+ s\)", repeated)
        ticker.say("step 3 of 9", now=False)  # only in the next periodic line
        ticker.say("writing")
        said = stream.getvalue().splitlines().index("job: writing")
        assert re.fullmatch(r"job: writing \(\d+ s\)", _wait_for_lines(stream, said + 2)[-1])
    assert "step 3 of 9" not in stream.getvalue()
    stopped = stream.getvalue()
    time.sleep(0.2)
    assert stream.getvalue() == stopped


def test_a_disabled_ticker_prints_nothing():
    stream = io.StringIO()
    with Ticker("job", "starting", every=0.01, stream=stream, enabled=False) as ticker:
        ticker.say("writing")
        time.sleep(0.05)
    assert stream.getvalue() == ""


def test_fit_progress_puts_the_epoch_step_and_loss_into_the_next_periodic_line():
    stream = io.StringIO()
    with Ticker("train", "epoch 1/3", every=0.3, stream=stream) as ticker:
        progress = FitProgress(ticker, "training")
        progress.params = {"epochs": 3, "steps": 40}  # as Keras sets it
        progress.on_epoch_begin(1)
        progress.on_train_batch_end(4, {"loss": 1.23456})
        assert stream.getvalue().splitlines() == ["train: epoch 1/3"]  # not printed at once
        assert re.fullmatch(r"train: training: epoch 2/3, step 5/40, loss 1\.235 \(\d+ s\)",
                            _wait_for_lines(stream, 2)[-1])
        progress.on_test_begin()
        assert re.fullmatch(r"train: training: epoch 2/3, validating \(\d+ s\)",
                            _wait_for_lines(stream, 3)[-1])
