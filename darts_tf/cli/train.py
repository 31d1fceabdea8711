"""darts-train: trains a network built from a genotype from scratch (paper A.2.1) and writes its artifacts.

    python -m darts_tf.cli.train --genotype DARTS_V2 --output_dir runs/darts_v2          # the paper's setting
    python -m darts_tf.cli.train --genotype my_cell.json --validation_portion 0.2 --epochs 100 ...   # selection
    python -m darts_tf.cli.train --dataset digits --layers 3 --init_channels 8 --epochs 2 --cutout_length 0  # smoke

Flags are the fields of `darts_tf.cnn.train.TrainConfig`; the script is thin: flags -> config -> validate ->
`darts_tf.cnn.train.train`, which checks every input before it writes anything (flags.txt is written when fitting
begins).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict

import keras
from absl import flags

from darts_tf.cli import common
from darts_tf.io_utils import atomic_write_text
from darts_tf.run_files import RunFiles

FLAGS = flags.FLAGS

HELP: Dict[str, str] = {
    "genotype": "Published genotype name (DARTS_V2, DARTS_V1, NASNet, AmoebaNet, ...) or path of a genotype JSON file.",
    "dataset": "cifar10, cifar100, digits (offline), any tfds image-classification dataset, a folder "
               "DIR/train/<class>/* + DIR/test/<class>/* (or val/), or an .npz with x_train, y_train, x_test, y_test.",
    "data_dir": "tfds data_dir (where prepared datasets live).",
    "layers": "Number of cells.",
    "init_channels": "Initial channels C.",
    "learning_rate": "Initial SGD learning rate (cosine-annealed per epoch to learning_rate_min).",
    "cutout_length": "Cutout square side in pixels (0 = off).",
    "drop_path_prob": "Drop-path probability reached at the last epoch (epoch e uses drop_path_prob * e / epochs).",
    "grad_clip": "Global gradient-norm clip (0 = none).",
    "validation_portion": "0: train on the whole train split and report test. >0: hold out this portion of train "
                          "and report validation accuracy (the test split is never touched).",
    "output_dir": "Run directory: checkpoint, model.keras, metrics.json, genotype.json, tensorboard/.",
    "resume": "Continue the run in output_dir from its last finished epoch.",
    "jit_compile": "Compile the train step with XLA.",
    "strategy": "auto (MirroredStrategy when > 1 GPU), mirrored, multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG), or default.",
    "export": "Also write a SavedModel (uint8 images or encoded image bytes -> probabilities and class names) to "
              "output_dir/saved_model/1 (the base path TF Serving and KServe read is output_dir/saved_model).",
    "eval_every": "Evaluate the held-out split every N epochs during training (0 = only at the end).",
    "verbose": common.VERBOSE_HELP,
    "network": "auto (NetworkImageNet for images >= 64 px, else NetworkCIFAR), imagenet, or cifar.",
    "learning_rate_decay": "Learning-rate factor applied every epoch.",
    "label_smoothing": "Label smoothing of the cross-entropy.",
}


def define_config_flags(cls, help_texts: Dict[str, str] = HELP) -> None:
    """One absl flag per field of the config dataclass `cls`, with the field's default (help: `help_texts`, else the
    field's metadata)."""
    for define, name, default, text in common.dataclass_flags(cls, help_texts):
        define(name, default, text)  # here, so that the flags are this script's (its --help lists them)


class RecordFlags(keras.callbacks.Callback):
    """Writes the command line beside the outputs (output_dir/flags.txt) when fitting begins: after every input
    was checked and the data loaded, so that a refused run leaves nothing behind."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.path = RunFiles(output_dir).flags

    def on_train_begin(self, logs=None):
        atomic_write_text(self.path, FLAGS.flags_into_string())


def run_training(argv, config_cls, train: Callable[..., Dict[str, Any]]) -> None:
    """The main of the training scripts: flags -> `config_cls` -> `train(config)` (which checks every input before
    it writes anything; flags.txt is written when fitting begins), metrics printed as JSON."""

    def body():
        config = common.config_from_flags(config_cls, verbose=common.fit_verbose())
        metrics = train(config, callbacks=[RecordFlags(config.output_dir)])
        print(json.dumps(metrics, indent=1))

    common.run_main_without_args(argv, body)


def main(argv):
    from darts_tf.cnn import train

    run_training(argv, train.TrainConfig, train.train)


def run():
    """Console-script entry point (darts-train)."""
    from darts_tf.cnn.train import TrainConfig

    common.start(main, lambda: define_config_flags(TrainConfig))


if __name__ == "__main__":
    run()
