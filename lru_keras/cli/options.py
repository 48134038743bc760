"""The arguments several `lru-keras` commands share, defined once: argument types, the data
dir, the model options and the model they describe, the recipe options of `train` and `tune`,
verbosity, and the one-line error message.

Argument types raise `argparse.ArgumentTypeError`, so that argparse names the argument and the
command exits with status 2.
"""

from __future__ import annotations

import argparse
import sys

from lru_keras import data, zoo
from lru_keras.train import recipes
from lru_keras.validation import TooLargeError, require_int, require_positive_int
from lru_keras.zoo.lrunet import stage_widths

# The model options besides --weights, by attribute name.
ARCHITECTURE_FLAGS = {
    "reuse": "--reuse", "width": "--width", "classes": "--classes",
    "input_shape": "--input-shape", "no_shuffle": "--no-shuffle",
    "weights_file": "--weights-file",
}
MODEL_FLAGS = ("--weights", *ARCHITECTURE_FLAGS.values())


def print_error(message) -> None:
    """The one-line error every command ends with on failure: `lru-keras: error: ...` (a
    message of several lines is joined into one)."""
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"lru-keras: error: {line}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are the one-line error with a pointer to --help,
    not argparse's usage block first. argparse makes the parsers of subcommands of the class of
    their parent, so the top-level parser of this class gives every command this behaviour."""

    def error(self, message):
        print_error(f"{message} (see `{self.prog} --help`)")
        self.exit(2)


def _argument_type(convert, check, wanted):
    """An argparse type: `check(convert(text))`, or a usage error "expected `wanted`" (or the
    bound it exceeds)."""
    def parse(text):
        try:
            return check(convert(text))
        except TooLargeError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None

    return parse


def _accepting(accept):
    """A check that returns the value if `accept(value)`, else raises ValueError."""
    def check(value):
        if not accept(value):
            raise ValueError(value)
        return value

    return check


positive_int = _argument_type(int, lambda value: require_positive_int("value", value),
                              "a positive integer")
non_negative_int = _argument_type(int, lambda value: require_int("value", value, 0),
                                  "an integer >= 0")
positive_float = _argument_type(float, _accepting(lambda value: value > 0), "a positive number")
non_negative_float = _argument_type(float, _accepting(lambda value: value >= 0), "a number >= 0")
# An int for integer text ("256"), else a float ("0.5", "1.0").
positive_number = _argument_type(
    lambda text: int(text) if text.strip().lstrip("+").isdigit() else float(text),
    _accepting(lambda value: value > 0), "a positive number")


def _width_value(value):
    stage_widths(value)
    return value


width = _argument_type(float, _width_value, "a positive multiple of 0.125 (0.5, 1, 2, ...)")


def _shape(text):
    shape = tuple(int(part) for part in text.split(","))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(text)
    return shape


input_shape = _argument_type(str, _shape, "HEIGHT,WIDTH,CHANNELS such as 32,32,3")


def handled_by(parser, handler, json_help=None, interrupt_hint=None, **defaults):
    """Makes `handler` the function `main` calls with the parsed arguments of `parser` (which
    it finds as `args.parser`, for usage errors), after adding --json (last, with
    `json_help`) if given; returns `parser`. `interrupt_hint` ends the line printed after
    Ctrl-C: what the interrupted command left and how to go on."""
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    parser.set_defaults(func=handler, parser=parser, interrupt_hint=interrupt_hint, **defaults)
    return parser


def add_data_dir_argument(parser) -> None:
    """The --data-dir option every command that reads a dataset takes."""
    parser.add_argument("--data-dir", metavar="DIR",
                        help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def add_model_arguments(parser, weights_file=True) -> None:
    """--weights NAME, or the LruNet architecture arguments (and with `weights_file`, the
    --weights-file of the model they describe)."""
    group = parser.add_argument_group(
        "model", "either --weights NAME, or the architecture (builder defaults: --reuse 14 "
                 "--width 1, 10 classes, 32x32x3 input)")
    names = [entry.name for entry in zoo.list_weights()]
    group.add_argument("--weights", choices=names, metavar="NAME",
                       help="registered weights: " + ", ".join(names))
    group.add_argument("--reuse", type=positive_int, metavar="N", help="reuses per block")
    group.add_argument("--width", type=width, metavar="W",
                       help="width multiplier, a positive multiple of 0.125")
    group.add_argument("--classes", type=positive_int, metavar="C")
    group.add_argument("--input-shape", type=input_shape, metavar="H,W,C")
    group.add_argument("--no-shuffle", action="store_true",
                       help="no channel shuffle between reuses")
    if weights_file:
        parser.add_argument("--weights-file", metavar="PATH",
                            help="a .weights.h5 file for the model the arguments describe")


def given(args, flag) -> bool:
    """Whether the option `flag` (e.g. "--input-shape") was given on the command line."""
    value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
    return value not in (None, False)


def refuse_model_arguments(args) -> None:
    """Usage error if a MODEL_FILE comes with model options (the file is the whole model)."""
    named = [flag for flag in MODEL_FLAGS if given(args, flag)]
    if named:
        args.parser.error(f"MODEL_FILE is a whole model; drop {', '.join(named)}")


def require_model(args, model_file=True) -> None:
    """Usage error unless the arguments name a model (or a MODEL_FILE, if the command takes
    one)."""
    if not (args.weights or args.weights_file or (model_file and args.model)):
        args.parser.error("give a model: --weights NAME, or --weights-file PATH with the model "
                          "arguments" + (", or a .keras MODEL_FILE" if model_file else ""))


def weights_dataset(args):
    """The dataset of --weights (usage error if --dataset names another), else --dataset."""
    if not args.weights:
        return args.dataset
    dataset = zoo.get_weights(args.weights).dataset
    if args.dataset is not None and args.dataset != dataset:
        args.parser.error(f"--weights {args.weights} is a {dataset} model; drop "
                          f"--dataset {args.dataset}")
    return dataset


def create_model(weights=None, *, reuse=None, width=None, dataset=None, classes=None,
                input_shape=None, shuffle=True, weights_file=None, load_weights=True):
    """The model of a registered weights name, or an LruNet of architecture arguments: the
    one place the command line builds a model (through `lru_keras.zoo.create`).

    Args:
        weights: a registered weights name (`lru_keras.zoo.list_weights()`), which fixes the
            architecture, classes and input shape; none of the other arguments may be given.
        reuse, width, shuffle: LruNet architecture (builder defaults when None).
        dataset: a dataset name whose classes and image shape the model gets.
        classes, input_shape: explicit alternatives to `dataset` (must agree with it if both).
        weights_file: a `.weights.h5` file saved from a model with these arguments.
        load_weights: False builds the architecture only (fast; enough for counting).
    """
    if weights is not None:
        entry = zoo.get_weights(weights)
        given = dict(reuse=reuse, width=width, dataset=dataset, classes=classes,
                     input_shape=input_shape, weights_file=weights_file)
        extra = sorted(k for k, v in given.items() if v is not None) + (
            [] if shuffle else ["shuffle"])
        if extra:
            raise ValueError(
                f"weights={weights!r} fixes the model ({entry.describe()}, {entry.classes} "
                f"classes, input {entry.input_shape}); do not also give {extra}."
            )
        return zoo.create(entry.name, **({} if load_weights else {"weights": None}))
    if dataset is not None:
        spec = data.info(dataset)
        given = {"classes": classes, "input_shape": input_shape and tuple(input_shape)}
        implied = {"classes": spec.num_classes, "input_shape": spec.image_shape}
        for name, value in given.items():
            if value is not None and value != implied[name]:
                raise ValueError(
                    f"{name}={value!r} disagrees with dataset={dataset!r}, which has "
                    f"{name}={implied[name]!r}; give one or the other."
                )
        classes, input_shape = implied["classes"], implied["input_shape"]
    if weights_file is not None and not str(weights_file).endswith(".weights.h5"):
        raise ValueError(f"--weights-file {str(weights_file)!r} must be a .weights.h5 file "
                         f"(Keras's weights format).")
    architecture = {k: v for k, v in dict(reuse=reuse, width=width).items() if v is not None}
    return zoo.create("LruNet", **architecture, classes=classes, input_shape=input_shape,
                      shuffle=shuffle, weights=weights_file if load_weights else None)


def model_from_args(args, dataset, load_weights=True):
    """The model the parsed model options describe: --weights NAME (no architecture options
    allowed with it), or an LruNet of the architecture options for `dataset`."""
    if args.weights:
        named = [flag for flag in ARCHITECTURE_FLAGS.values() if given(args, flag)]
        if named:
            args.parser.error(f"--weights {args.weights} fixes the model; drop {', '.join(named)}")
        return create_model(args.weights, load_weights=load_weights)
    return create_model(
        reuse=args.reuse, width=args.width, dataset=dataset, classes=args.classes,
        input_shape=args.input_shape, shuffle=not args.no_shuffle,
        weights_file=getattr(args, "weights_file", None), load_weights=load_weights)


def add_recipe_arguments(group, recipe, *, epochs_help=None, batch_size_help=None) -> None:
    """--recipe (default `recipe`) and the overrides `train` and `tune` share: --epochs,
    --batch-size, --lr."""
    group.add_argument("--recipe", default=recipe, choices=sorted(recipes.RECIPES),
                       help=f"default {recipe}")
    group.add_argument("--epochs", type=positive_int, metavar="N", help=epochs_help)
    group.add_argument("--batch-size", type=positive_int, metavar="N", help=batch_size_help)
    group.add_argument("--lr", type=positive_float, metavar="LR", dest="learning_rate",
                       help="(peak) learning rate")


def add_augment_argument(group) -> None:
    """--no-augment, of `train` and `tune`."""
    group.add_argument("--no-augment", action="store_false", dest="augment", default=None,
                       help="no crop/rotation/flip augmentation")


def add_train_images_argument(group) -> None:
    """--train-images, of `train` and `tune`."""
    group.add_argument("--train-images", type=positive_int, metavar="N",
                       help="train on only N images (spread over the split)")


def add_verbosity_arguments(group, silent_help) -> None:
    """--quiet or --silent (the parser sets the default: verbose="auto")."""
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", action="store_const", const=2, dest="verbose",
                           help="one line per epoch instead of a progress bar")
    verbosity.add_argument("--silent", action="store_const", const=0, dest="verbose",
                           help=silent_help)
