"""`lru-keras`: the command line of the model zoo.

One module per command (zoo, info, evaluate, data, train, tune, export, inspect, qat, compare), each
adding its parser and handler; the arguments several commands share are in `options`. Handlers
call library functions and print. `main(argv)` returns the exit status: 0 on success, 2 for bad
arguments, a library error, a missing optional library (naming the pip extra that installs
it) or a file that cannot be read or written (printed as one line,
naming the file, no traceback), 130 after Ctrl-C (one line
too, saying what the command left and how to go on: `handled_by(..., interrupt_hint=...)`);
`tune` returns 1 when its search fails.
"""

from lru_keras.cli.compare import add_compare_command
from lru_keras.cli.data import add_data_commands
from lru_keras.cli.evaluate import add_evaluate_command
from lru_keras.cli.export import add_export_command
from lru_keras.cli.info import add_info_command
from lru_keras.cli.inspect import add_inspect_command
from lru_keras.cli.interrupt import exit_on_interrupt, report_interrupt
from lru_keras.cli.options import Parser, print_error
from lru_keras.cli.qat import add_qat_command
from lru_keras.cli.train import add_train_commands
from lru_keras.cli.tune import add_tune_command
from lru_keras.cli.zoo import add_zoo_command
from lru_keras.extras import MissingExtraError
from lru_keras.startup import show_startup_lines, start_tensorflow_quietly


def main(argv=None):
    """Runs the command line on `argv` (default: sys.argv[1:]); returns the exit status."""
    start_tensorflow_quietly()
    parser = build_parser()
    hint = None
    try:
        args = parser.parse_args(argv)
        if args.verbose_startup:
            show_startup_lines()
        hint = args.interrupt_hint
        with exit_on_interrupt(hint):
            return args.func(args)
    except KeyboardInterrupt:
        return report_interrupt(hint)
    except SystemExit as stop:  # argparse errors (status 2) and --help (status 0)
        return 0 if stop.code is None else stop.code
    except (ValueError, MissingExtraError) as error:  # incl. corrupt files (ChecksumError)
        print_error(error)
        return 2
    except OSError as error:  # a missing, unreadable or unwritable file or directory
        print_error(describe_os_error(error))
        return 2


def describe_os_error(error: OSError) -> str:
    """"<what went wrong>: <file>" (and the second file of a rename), without the errno;
    an OSError that names no file (DatasetNotAvailableError) as its message."""
    if error.filename is None or error.strerror is None:
        return str(error)
    files = repr(error.filename) + (f" -> {error.filename2!r}" if error.filename2 else "")
    return f"{error.strerror}: {files}"


def build_parser():
    """The argparse parser with every command (usage errors: one line, see `Parser`)."""
    parser = Parser(
        prog="lru-keras", description="Keras 3 model zoo of layer-reuse CNNs (LruNet).")
    parser.add_argument("--verbose", action="store_true", dest="verbose_startup",
                        help="also show TensorFlow's start-up notices (oneDNN, CUDA, CPU "
                             "features), held back by default")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (add_zoo_command, add_info_command, add_evaluate_command,
                        add_data_commands, add_train_commands, add_tune_command,
                        add_export_command, add_inspect_command, add_qat_command,
                        add_compare_command):
        add_command(commands)
    return parser
