"""The optional parts of lru_keras and the pip extra that installs each.

`pip install lru_keras` is the core: the layers, building zoo models, loading the pretrained
weights and predicting (Keras 3 on TensorFlow). Everything else needs an extra, as setup.cfg's
`extras_require` declares (`pip install "lru_keras[all]"` takes them all). A module that needs
an optional library gets it from `require` (or, for a library used in many functions of a
module that must import without it, `lazy`), so that a missing extra is one clear error naming
the extra and the pip command, raised before any long work starts, instead of a bare
ModuleNotFoundError from deep inside a call.
"""

from __future__ import annotations

import importlib
import importlib.util
import types

# top-level module: (extra, what needs it)
EXTRAS = {
    "tensorflow_datasets": ("data", "reading the TFDS datasets (training, evaluation, "
                                    "calibration images)"),
    "ai_edge_litert": ("litert", "writing, verifying and running .tflite files"),
    "tflite_micro": ("micro", "running and measuring int8 files with TensorFlow Lite Micro"),
    "tensorflow_model_optimization": ("qat", "quantization-aware training"),
    "tf_keras": ("qat", "quantization-aware training"),
    "keras_tuner": ("tune", "hyperparameter searches"),
    "tensorboard": ("tune", "hyperparameter searches (KerasTuner logs to TensorBoard)"),
    "sklearn": ("tune", "the Bayesian tuner (KerasTuner's Gaussian process)"),
    "matplotlib": ("plots", "figures (training curves, search and comparison plots)"),
}


class MissingExtraError(ImportError):
    """An optional library is not installed; the message names the extra that installs it."""


def _optional_library(module: str) -> str:
    """The top-level name of `module`, which must be one of EXTRAS (a programming error if not)."""
    top = module.partition(".")[0]
    if top not in EXTRAS:
        raise ValueError(f"`module`={module!r} is not an optional library: one of "
                         f"{sorted(EXTRAS)}")
    return top


def message(module: str) -> str:
    """The one-line explanation for a missing `module` (a top-level module name of EXTRAS)."""
    extra, purpose = EXTRAS[module]
    return (f"{purpose} needs the Python module {module!r}, which is not installed: "
            f"pip install \"lru_keras[{extra}]\"")


def require(module: str) -> types.ModuleType:
    """Imports `module` (a name in EXTRAS, or a submodule of one); MissingExtraError if its
    library is not installed. A ModuleNotFoundError of another module (a broken install of
    the library itself) is raised as it is."""
    top = _optional_library(module)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != top:
            raise
        raise MissingExtraError(message(top)) from None


def require_installed(*modules: str) -> None:
    """Checks that each top-level `module` of EXTRAS is installed, without importing it (for
    libraries that a child process imports, such as QAT's tensorflow-model-optimization)."""
    for module in modules:
        top = _optional_library(module)
        if importlib.util.find_spec(top) is None:
            raise MissingExtraError(message(top))


def installed(module: str) -> bool:
    """Whether the library of `module` (a top-level name of EXTRAS) is installed, for work
    that is done only when it is (TFLM's measurements of an exported int8 file)."""
    return importlib.util.find_spec(_optional_library(module)) is not None


class _LazyModule(types.ModuleType):
    """A stand-in for an optional module, imported through `require` on first attribute use."""

    def __init__(self, name):
        super().__init__(name)
        self.__dict__["_module"] = None

    def __getattr__(self, attribute):
        if self.__dict__["_module"] is None:
            self.__dict__["_module"] = require(self.__name__)
        return getattr(self.__dict__["_module"], attribute)


def lazy(module: str) -> types.ModuleType:
    """`module` (a top-level name of EXTRAS), imported when first used: for a library that
    some functions of an always-imported module need (tensorflow-datasets in lru_keras.data)."""
    _optional_library(module)
    return _LazyModule(module)
