"""darts-train: trains a network built from a genotype from scratch (paper A.2.1) and writes its artifacts.

    python -m darts_tf.cli.train --genotype DARTS_V2 --output_dir runs/darts_v2          # the paper's setting
    python -m darts_tf.cli.train --genotype my_cell.json --validation_portion 0.2 --epochs 100 ...   # selection
    python -m darts_tf.cli.train --dataset digits --layers 3 --init_channels 8 --epochs 2 --cutout_length 0  # smoke
    python -m darts_tf.cli.train --genotype runs/nb201/genotype.json --output_dir runs/nb201_eval   # NAS-Bench-201's
                                                                     # protocol (--preset nb201, C=16, N=5, 200 epochs)

Flags are the fields of `darts_tf.cnn.train.TrainConfig`; the script is thin: flags -> config -> validate ->
`darts_tf.cnn.train.train`, which checks every input before it writes anything (flags.txt is written when fitting
begins).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, Optional

import keras
from absl import flags

from darts_tf.cli import common
from darts_tf.io_utils import atomic_write_text
from darts_tf.run_files import RunFiles

FLAGS = flags.FLAGS

HELP: Dict[str, str] = {
    "genotype": "Published genotype name (DARTS_V2, DARTS_V1, NASNet, AmoebaNet, ...), path of a genotype JSON file, "
                "or a NAS-Bench-201 cell (its architecture string '|op~0|+|op~0|op~1|+|...|', a kind 'nb201' JSON "
                "file, or 'ResNet'), trained in NAS-Bench-201's skeleton (NB201Network).",
    "nesterov": "Nesterov momentum for SGD.",
    "dataset": "cifar10, cifar100, digits (offline), any tfds image-classification dataset, a folder "
               "DIR/train/<class>/* + DIR/test/<class>/* (or val/), or an .npz with x_train, y_train, x_test, y_test.",
    "data_dir": "tfds data_dir (where prepared datasets live).",
    "layers": "Number of cells (a NAS-Bench-201 network: cells per stage, N).",
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
    "strategy": "auto (MirroredStrategy when > 1 GPU), mirrored, multi_worker (MultiWorkerMirroredStrategy from "
                "TF_CONFIG: every worker runs the same command, the chief writes output_dir), or default. --batch_size "
                "is the global batch, split over every replica.",
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
        from darts_tf.distribute import is_chief

        if is_chief(getattr(self.model, "distribute_strategy", None)):  # one writer of a multi-worker run
            atomic_write_text(self.path, FLAGS.flags_into_string())


def run_training(argv, config_cls, train: Callable[..., Dict[str, Any]],
                 make_config: Optional[Callable[..., Any]] = None) -> None:
    """The main of the training scripts: flags -> `config_cls` (or `make_config(**overrides)`, e.g. a preset's) ->
    `train(config)` (which checks every input before it writes anything; flags.txt is written when fitting begins),
    metrics printed as JSON."""

    def body():
        make = make_config or (lambda **overrides: common.config_from_flags(config_cls, **overrides))
        config = make(verbose=common.fit_verbose())
        metrics = train(config, callbacks=[RecordFlags(config.output_dir)])
        print(json.dumps(metrics, indent=1))

    common.run_main_without_args(argv, body)


def train_config_from_flags(**overrides):
    """The --preset's TrainConfig with the flags given on the command line (and `overrides`). Without --preset: the
    nb201 preset for a NAS-Bench-201 --genotype (NAS-Bench-201's protocol), else darts (the paper's)."""
    from darts_tf.cnn.train import TrainConfig, get_train_preset

    given = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)
             if f.name in FLAGS and FLAGS[f.name].present}
    given.update(overrides)
    if "preset" in FLAGS and FLAGS["preset"].present:
        preset = FLAGS["preset"].value
    else:
        try:
            nb201 = "genotype" in given and TrainConfig(genotype=given["genotype"]).network_kind() == "nb201"
        except ValueError:  # a bad genotype: the config's validation reports it
            nb201 = False
        preset = "nb201" if nb201 else "darts"
    return get_train_preset(preset, **given)


def define_train_flags() -> None:
    """darts-train's flags: TrainConfig's fields and --preset."""
    from darts_tf.cnn.train import TRAIN_PRESETS, TrainConfig

    define_config_flags(TrainConfig)
    if "preset" not in FLAGS:  # darts-search and darts-rnn-train define a --preset of their own (one process in tests)
        flags.DEFINE_string("preset", "darts", f"Training settings preset: {', '.join(sorted(TRAIN_PRESETS))} "
                            "(darts: the paper's A.2.1; nb201: NAS-Bench-201's CIFAR protocol, the default for a "
                            "NAS-Bench-201 --genotype). Flags given on the command line override the preset's values.")


def main(argv):
    from darts_tf.cnn import train

    run_training(argv, train.TrainConfig, train.train, train_config_from_flags)


def run():
    """Console-script entry point (darts-train)."""
    common.start(main, define_train_flags)


if __name__ == "__main__":
    run()
