"""Learning-rate schedules stepped per epoch, as the reference's PyTorch schedulers."""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="darts_tf")
class EpochCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(epoch) = min + (max - min) * (1 + cos(pi * epoch / epochs)) / 2 (CosineAnnealingLR stepped each epoch)."""

    def __init__(self, initial_learning_rate: float, epochs: int, steps_per_epoch: int, min_learning_rate: float = 0.0):
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"epochs and steps_per_epoch must be >= 1. Received: epochs={epochs}, steps_per_epoch={steps_per_epoch}")
        self.initial_learning_rate, self.epochs = float(initial_learning_rate), int(epochs)
        self.steps_per_epoch, self.min_learning_rate = int(steps_per_epoch), float(min_learning_rate)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / self.steps_per_epoch)
        cos = ops.cos(math.pi * ops.minimum(epoch, self.epochs) / self.epochs)
        return self.min_learning_rate + 0.5 * (self.initial_learning_rate - self.min_learning_rate) * (1.0 + cos)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "epochs": self.epochs,
                "steps_per_epoch": self.steps_per_epoch, "min_learning_rate": self.min_learning_rate}


@keras.saving.register_keras_serializable(package="darts_tf")
class EpochExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(epoch) = initial * gamma ** epoch (StepLR(1, gamma): ImageNet's x0.97 per epoch)."""

    def __init__(self, initial_learning_rate: float, gamma: float, steps_per_epoch: int):
        self.initial_learning_rate, self.gamma, self.steps_per_epoch = float(initial_learning_rate), float(gamma), int(steps_per_epoch)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / self.steps_per_epoch)
        return self.initial_learning_rate * ops.power(self.gamma, epoch)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "gamma": self.gamma, "steps_per_epoch": self.steps_per_epoch}
