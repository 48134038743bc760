"""`LruNetHyperModel`: the KerasTuner HyperModel of a search over LruNet's N, width, dropout
and shuffle.

Each trial's model is built by the zoo's builder registry and compiled exactly as
`lru_keras.train` compiles a run (`train.build_model`, `train.compile_model`: PyTorch-style
SGD with coupled weight decay and the recipe's learning-rate schedule, cross-entropy,
accuracy), so a trial's accuracy is what `lru-keras train` would reach with the same recipe.
Every build starts from the same seed: trials differ by their hyperparameters, not by their
initialisation.
"""

from __future__ import annotations

import dataclasses

import keras

from lru_keras import data, extras
from lru_keras.train import build_model, compile_model
from lru_keras.train import config as train_config
from lru_keras.tune.space import SearchSpace

keras_tuner = extras.require("keras_tuner")  # the [tune] extra


class LruNetHyperModel(keras_tuner.HyperModel):
    """Builds and compiles `lru_keras.zoo.LruNet` for a trial's hyperparameters.

    Args:
        space: the `SearchSpace` to draw N, width, dropout and shuffle from.
        training: a resolved `lru_keras.train.TrainConfig` (dataset, recipe, epochs, batch
            size, optimizer settings, seed); its model arguments and dropout are the trial's.
        steps_per_epoch: optimizer steps per epoch, for the learning-rate schedule.
        jit_compile: XLA for training (`lru_keras.train.distribute.resolve_jit`).
    """

    def __init__(self, space: SearchSpace, training: train_config.TrainConfig,
                 steps_per_epoch: int, jit_compile: bool = False):
        super().__init__(name="lrunet")
        self.space = space
        self.training = training
        self.steps_per_epoch = steps_per_epoch
        self.jit_compile = jit_compile

    def builder_arguments(self, hp) -> dict:
        """LruNet's arguments for the trial (`hp`), classes and input shape included."""
        values = self.space.declare(hp)
        spec = data.info(self.training.dataset)
        return {"reuse": values["reuse"], "width": values["width"],
                "shuffle": values["shuffle"], "dropout": values["dropout"],
                "classes": spec.num_classes, "input_shape": list(spec.image_shape)}

    def build(self, hp):
        """The trial's LruNet, compiled for training."""
        arguments = self.builder_arguments(hp)
        config = dataclasses.replace(
            self.training, model_args={k: arguments[k] for k in ("reuse", "width", "shuffle")},
            dropout=arguments["dropout"])
        keras.utils.set_random_seed(self.training.seed)
        model = build_model(config, data.info(self.training.dataset))
        compile_model(model, config, self.steps_per_epoch, self.jit_compile)
        return model
