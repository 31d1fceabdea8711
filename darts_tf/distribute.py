"""Distribution strategies by name (``--strategy`` of the search and training scripts).

'auto': ``MirroredStrategy`` when more than one GPU is visible, else the default (one-device) strategy;
'mirrored': ``MirroredStrategy`` over every visible GPU (or the logical CPU devices when there is none);
'multi_worker': ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; 'default': no distribution.
"""

from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multi_worker", "default")


def check_strategy_name(name: str) -> None:
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy called `name` (see the module docstring)."""
    check_strategy_name(name)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
