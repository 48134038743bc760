"""Training recipes: the paper's, and a short-budget one for small machines.

A recipe is a named set of defaults (epochs, batch size, learning-rate schedule, SGD settings,
dropout, augmentation, early stopping); every value can be overridden per run. Schedules are
functions of the optimizer step, so they are saved with the optimizer and a resumed run
continues them exactly.

The paper's recipe (Köpüklü et al. 2019, Sec. 3): SGD, momentum 0.9, weight decay 5e-4
(coupled, as PyTorch's `weight_decay`; see `lru_keras.train.optimizer`), batch 256,
learning rate 0.1, x0.1 from epoch 200 and again from epoch 250, 300 epochs, dropout 0.5
(0.7 for CIFAR-100), random crop + rotation + flip. With another number of epochs the two
drops stay at the same fractions of the run (2/3 and 5/6).
"""

from __future__ import annotations

import dataclasses
import math

import keras

# The two learning-rate drops of the paper (epochs 200 and 250 of 300), as fractions of a run.
PAPER_MILESTONES = (2 / 3, 5 / 6)
PAPER_DROPOUT = {"cifar100": 0.7}  # every other dataset: 0.5


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Defaults of one training recipe.

    schedule: "step" (x `decay` at each of `milestones`, fractions of the run), "cosine"
        (linear warm-up over `warmup_epochs`, then cosine decay to 0) or "constant".
    dropout: the classifier's dropout; None means the paper's per-dataset value.
    patience: early-stopping patience in epochs on the validation accuracy (None: off);
        it only counts from epoch `patience_start` (a fraction of the run) on, so that a
        step schedule is not cut before its last drop.
    """

    name: str
    description: str
    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: tuple = PAPER_MILESTONES
    decay: float = 0.1
    warmup_epochs: float = 0.0
    dropout: float | None = None
    augment: bool = True
    patience: int | None = None
    patience_start: float = 0.0


RECIPES = {
    "paper": Recipe(
        name="paper",
        description="the paper's: SGD 0.9, coupled L2 5e-4, batch 256, lr 0.1, x0.1 at "
                    "epochs 200 and 250, 300 epochs, dropout 0.5 (0.7 CIFAR-100), augmented",
        epochs=300, batch_size=256, learning_rate=0.1, schedule="step",
        patience=30, patience_start=PAPER_MILESTONES[1],
    ),
    "short": Recipe(
        name="short",
        description="short budget for small machines: SGD 0.9, coupled L2 5e-4, batch 128, "
                    "1 warm-up epoch then cosine from lr 0.1 to 0, 5 epochs, dropout 0.2, "
                    "augmented",
        epochs=5, batch_size=128, learning_rate=0.1, schedule="cosine", warmup_epochs=1.0,
        dropout=0.2,
    ),
}

SCHEDULES = ("step", "cosine", "constant")


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; ValueError listing the recipes."""
    if name not in RECIPES:
        raise ValueError(f"recipe={name!r} is not a known recipe; expected one of "
                         f"{sorted(RECIPES)}")
    return RECIPES[name]


def default_dropout(dataset: str) -> float:
    """The paper's dropout for a dataset: 0.7 for CIFAR-100, else 0.5."""
    return PAPER_DROPOUT.get(dataset, 0.5)


def make_schedule(schedule: str, learning_rate: float, epochs: int, steps_per_epoch: int, *,
                  milestones=PAPER_MILESTONES, decay: float = 0.1,
                  warmup_epochs: float = 0.0):
    """The learning rate as a function of the optimizer step (a Keras schedule, or a float).

    "step": `learning_rate * decay**k` from epoch `round(m_k * epochs)` on, i.e. from the
    first step of that epoch (PyTorch's MultiStepLR stepped once per epoch).
    """
    if schedule == "constant":
        return float(learning_rate)
    if schedule == "step":
        epochs_at = sorted({round(m * epochs) for m in milestones
                            if 0 < round(m * epochs) < epochs})
        if not epochs_at:
            return float(learning_rate)
        # PiecewiseConstantDecay gives values[0] while step <= boundaries[0]; the step index
        # of the first step of epoch e is e * steps_per_epoch.
        boundaries = [e * steps_per_epoch - 1 for e in epochs_at]
        values = [learning_rate * decay**k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if schedule == "cosine":
        return WarmupCosineDecay(learning_rate, total_steps=epochs * steps_per_epoch,
                                 warmup_steps=round(warmup_epochs * steps_per_epoch))
    raise ValueError(f"schedule={schedule!r} is not a known schedule; expected one of "
                     f"{list(SCHEDULES)}")


@keras.saving.register_keras_serializable(package="lru_keras")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps` (starting at peak / warmup_steps, not 0),
    then half a cosine from `peak` to 0 at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps=0):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = min(int(warmup_steps), max(self.total_steps - 1, 0))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        rising = self.peak * (step + 1.0) / warmup
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = keras.ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        falling = 0.5 * self.peak * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps}
