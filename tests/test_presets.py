"""darts_tf.presets: named configs registered once and handed out as fresh copies (the CNN search's and the RNN
trainings' --preset)."""

import dataclasses

import pytest

from darts_tf.presets import Presets


@dataclasses.dataclass
class Config:
    epochs: int = 1
    seed: int = 0


def test_a_preset_is_a_fresh_copy_with_overrides_and_names_are_registered_once():
    presets = Presets("search")
    base = presets.register("short", Config(epochs=2))
    copy = presets.config("short", seed=7)
    assert copy == Config(epochs=2, seed=7) and copy is not base and base == Config(epochs=2)
    with pytest.raises(ValueError, match=r"^Search preset 'short' is already registered\.$"):
        presets.register("short", Config())
    with pytest.raises(ValueError, match=r"^Unknown search preset 'long'\. Known presets: short\.$"):
        presets.config("long")
