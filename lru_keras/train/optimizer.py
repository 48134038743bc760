"""SGD with PyTorch's semantics: coupled weight decay (L2) and momentum on the raw gradient.

PyTorch's `torch.optim.SGD(lr, momentum, weight_decay=wd)`, which the paper used, does per
parameter w with gradient g, at every step:

    d = g + wd * w                 # coupled weight decay: an L2 term in the gradient
    buf = momentum * buf + d       # (buf = d at the first step; dampening 0)
    w = w - lr * buf               # (nesterov: w = w - lr * (d + momentum * buf))

The decay term is exactly the gradient of `0.5 * wd * ||w||^2` added to the loss, so this is
L2 regularisation with coefficient wd/2 on every parameter (the paper decays all of them,
BatchNorm gamma/beta included). It is NOT Keras's `weight_decay=` argument, which is
decoupled (AdamW-style: `w -= lr * wd * w` outside the gradient, so it never passes through
the momentum buffer). Adding wd*w here, once per variable, also applies the decay once to a
weight that a reused layer calls N times (a loss penalty through `add_loss` on the layer
would too, but would cost a graph term per variable and show up in the reported loss).

The momentum buffer holds raw gradients and the learning rate multiplies it at each step,
as in PyTorch; Keras's own SGD keeps `lr * g` in its buffer, which differs for a few steps
after every learning-rate drop.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lru_keras")
class CoupledSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled weight decay, step for step as `torch.optim.SGD`.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: momentum factor in [0, 1).
        weight_decay: coupled L2 coefficient (PyTorch's `weight_decay`), applied to every
            trainable variable.
        nesterov: Nesterov momentum, as PyTorch's `nesterov=True`.
        **kwargs: other `keras.optimizers.Optimizer` arguments (clipnorm, name, ...), except
            its decoupled `weight_decay`.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False,
                 name="coupled_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay!r} must be >= 0")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.momentum = float(momentum)
        self.coupled_weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = (
            self.add_optimizer_variables(variables, "momentum") if self.momentum else [])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        learning_rate = ops.cast(learning_rate, dtype)
        direction = ops.cast(gradient, dtype)
        if self.coupled_weight_decay:
            direction = direction + ops.cast(self.coupled_weight_decay, dtype) * variable
        if self.momentum:
            buffer = self.momentums[self._get_variable_index(variable)]
            momentum = ops.cast(self.momentum, dtype)
            updated = momentum * buffer + direction
            self.assign(buffer, updated)
            direction = direction + momentum * updated if self.nesterov else updated
        self.assign_sub(variable, learning_rate * direction)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.coupled_weight_decay,
                       "nesterov": self.nesterov})
        return config
