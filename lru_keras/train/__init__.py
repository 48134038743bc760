"""Training with `model.fit`: paper and short recipes, honest selection, resumable runs.

    from lru_keras.train import train
    summary = train(model="lrunet", model_args={"reuse": 14, "width": 1.0},
                    dataset="cifar10", recipe="paper")

Modules, one job each: `config` (what a run is), `recipes` (defaults and learning-rate
schedules), `optimizer` (SGD with PyTorch's coupled weight decay), `splits` (validation held
out of the training data), `run_dir` (the run directory, refusal, CSV, plot), `callbacks`
(selection, early stopping, resumable state), `distribute` (strategies, mixed precision, XLA),
`fit` (the run itself). The command line is `lru-keras train` (lru_keras/cli/train.py).
"""

from lru_keras.train.config import TrainConfig
from lru_keras.train.fit import (
    build_model, check_batch_size, compile_model, default_run_dir, format_summary,
    make_optimizer, train)
from lru_keras.train.optimizer import CoupledSGD
from lru_keras.train.recipes import RECIPES, Recipe, WarmupCosineDecay, get_recipe, make_schedule
from lru_keras.train.run_dir import DamagedFileError, RunDirConflictError
from lru_keras.train.splits import SplitPlan, plan_splits

__all__ = [
    "CoupledSGD", "DamagedFileError", "RECIPES", "Recipe", "RunDirConflictError", "SplitPlan",
    "TrainConfig", "WarmupCosineDecay", "build_model", "check_batch_size", "compile_model",
    "default_run_dir", "format_summary", "get_recipe", "make_optimizer", "make_schedule",
    "plan_splits", "train",
]
