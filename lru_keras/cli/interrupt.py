"""Ctrl-C that ends a long command at once, with one line and no traceback.

Python turns SIGINT into a KeyboardInterrupt only when the main thread next runs Python code.
Sent to `lru-keras tune` while TensorFlow compiled a training step, it took 20-35 s to act
(seen here: a search that went on to its end), and then ended with a traceback.
`exit_on_interrupt` lets the signal wake a thread instead (the interpreter writes each
signal's number to the `signal.set_wakeup_fd` pipe as it arrives), which prints the line and
ends the process without unwinding.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from lru_keras.cli.options import print_error

INTERRUPTED = 130  # the exit status of a command that SIGINT ended (128 + 2)


@contextlib.contextmanager
def exit_on_interrupt(resume_hint: str):
    """Within this block, Ctrl-C prints `lru-keras: error: interrupted; <resume_hint>` and ends
    the process with status 130 at once.

    The process ends as if killed (no cleanup runs), so use it only around work whose files
    are written atomically, which then resumes. Outside the main thread (where Python takes no
    signals) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # set_wakeup_fd's requirement
    previous_fd = signal.set_wakeup_fd(write_end)
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)

    def watch():
        while received := os.read(read_end, 1):
            if received[0] == signal.SIGINT:
                if sys.stdout.isatty():  # end a progress bar's line first
                    print(file=sys.stderr)
                print_error(f"interrupted; {resume_hint}")
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(INTERRUPTED)

    watcher = threading.Thread(target=watch, name="exit-on-interrupt", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watcher reads end of file and returns
        watcher.join()
        os.close(read_end)
