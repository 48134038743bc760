"""Ctrl-C that ends any command within a few seconds, with one line and no traceback.

Python acts on SIGINT only when the main thread next runs Python code. Sent to `lru-keras
tune` while TensorFlow compiled a training step, it took 20-35 s to act (seen here: a search
that went on to its end), and then ended with a traceback. So within `exit_on_interrupt`, SIGINT
does two things:

1. it raises KeyboardInterrupt in the main thread as usual, so that `finally` blocks run when
   the main thread gets there: temporary files are removed, a child process is stopped, and
   `main` prints the one line. Python drops a KeyboardInterrupt that lands in a weakref
   callback or a `__del__` ("Exception ignored in ..."), which let a search interrupted here
   go on to finish its trial; so while the block has not ended, SIGINT is sent to the main
   thread again every `RETRY_SECONDS` (a real signal, which also wakes a blocking sleep or
   read);
2. it wakes a watcher thread (the interpreter writes each signal's number to the
   `signal.set_wakeup_fd` pipe as it arrives), which, if the block has not ended `grace`
   seconds later (the main thread is inside a long TensorFlow call), prints the line and ends
   the process without unwinding. Every file the package writes is written atomically
   (`lru_keras.atomic`), so that leaves at most a hidden temporary file and never a partial
   result.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from lru_keras.cli.options import print_error

INTERRUPTED = 130  # the exit status of a command that SIGINT ended (128 + 2)
GRACE_SECONDS = 3.0
RETRY_SECONDS = 0.5


def interrupted_message(resume_hint: str | None) -> str:
    """"interrupted", with what to do next if there is something to say."""
    return "interrupted" + (f"; {resume_hint}" if resume_hint else "")


def report_interrupt(resume_hint: str | None) -> int:
    """Prints the one line of an interrupted command (after ending a progress bar's line);
    returns the exit status 130."""
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print_error(interrupted_message(resume_hint))
    return INTERRUPTED


@contextlib.contextmanager
def exit_on_interrupt(resume_hint: str | None = None, grace: float = GRACE_SECONDS):
    """Within this block, Ctrl-C raises KeyboardInterrupt in the main thread, and if the block
    has not ended `grace` seconds later, prints `lru-keras: error: interrupted; <resume_hint>`
    and ends the process with status 130 (see the module docstring).

    The caller catches the KeyboardInterrupt and reports it with `report_interrupt`. Outside the
    main thread (where Python takes no signals) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # set_wakeup_fd's requirement
    ended = threading.Event()
    main_thread = threading.main_thread().ident
    previous_fd = signal.set_wakeup_fd(write_end)
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch():
        while received := os.read(read_end, 1):
            if received[0] != signal.SIGINT:
                continue
            deadline = time.monotonic() + grace
            while not ended.wait(min(RETRY_SECONDS, max(0.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    report_interrupt(resume_hint)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(INTERRUPTED)
                signal.pthread_kill(main_thread, signal.SIGINT)

    watcher = threading.Thread(target=watch, name="exit-on-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        ended.set()
        signal.signal(signal.SIGINT, previous_handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watcher reads end of file and returns
        watcher.join()
        os.close(read_end)
