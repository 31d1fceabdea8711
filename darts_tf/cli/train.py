"""darts-train: trains a network built from a genotype from scratch (paper A.2.1) and writes its artifacts.

    python -m darts_tf.cli.train --genotype DARTS_V2 --output_dir runs/darts_v2          # the paper's setting
    python -m darts_tf.cli.train --genotype my_cell.json --validation_portion 0.2 --epochs 100 ...   # selection
    python -m darts_tf.cli.train --dataset digits --layers 3 --init_channels 8 --epochs 2 --cutout_length 0  # smoke

Flags are the fields of `darts_tf.training.TrainConfig`; the script is thin: flags -> config -> validate ->
flags written to output_dir/flags.txt -> `training.train`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Dict

from absl import app, flags

from darts_tf import checkpoint
from darts_tf.cli.common import run_main
from darts_tf.genotypes import atomic_write_text

FLAGS = flags.FLAGS
FLAGS_FILE = "flags.txt"

HELP: Dict[str, str] = {
    "genotype": "Published genotype name (DARTS_V2, DARTS_V1, NASNet, AmoebaNet, ...) or path of a genotype JSON file.",
    "dataset": "cifar10, cifar100, digits (offline), or any tfds image-classification dataset.",
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
    "strategy": "auto (MirroredStrategy when > 1 GPU), mirrored, or default.",
    "export": "Also write a SavedModel (uint8 images -> probabilities) to output_dir/saved_model.",
    "eval_every": "Evaluate the held-out split every N epochs during training (0 = only at the end).",
    "verbose": "fit progress: 0 silent, 1 progress bar, 2 one line per epoch.",
    "image_size": "Crop size of streamed (ImageNet) datasets.",
    "network": "auto (NetworkImageNet for images >= 64 px, else NetworkCIFAR), imagenet, or cifar.",
    "learning_rate_decay": "Learning-rate factor applied every epoch.",
    "label_smoothing": "Label smoothing of the cross-entropy.",
}


def define_config_flags(cls, help_texts: Dict[str, str] = HELP) -> None:
    """One absl flag per field of the config dataclass `cls`, with the field's default."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in FLAGS:
            continue
        kind = hints[field.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        base = args[0] if args else kind
        text = help_texts.get(field.name, field.name.replace("_", " ") + ".")
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(base, flags.DEFINE_string)
        define(field.name, field.default, text)


def config_from_flags(cls):
    return cls(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(cls)})


def write_flags(output_dir: str, resume: bool) -> None:
    """Records the command line beside the outputs (not over another run's, which the library then refuses)."""
    if checkpoint.has_state(output_dir) and not resume:
        return
    atomic_write_text(os.path.join(output_dir, FLAGS_FILE), FLAGS.flags_into_string())


def main(argv):
    from darts_tf import training

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")

    def body():
        config = config_from_flags(training.TrainConfig).validate()
        write_flags(config.output_dir, config.resume)
        metrics = training.train(config)
        print(json.dumps(metrics, indent=1))

    run_main(body)


def run():
    """Console-script entry point (darts-train)."""
    from darts_tf.training import TrainConfig

    define_config_flags(TrainConfig)
    app.run(main)


if __name__ == "__main__":
    run()
