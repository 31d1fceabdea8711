"""darts-train-imagenet: transfers a cell to ImageNet (paper A.2.3: 14 cells, C=48, batch 128, 250 epochs,
lr 0.1 x0.97 per epoch, label smoothing 0.1, wd 3e-5) or to another image dataset for a cheaper study.

    python -m darts_tf.cli.train_imagenet --dataset imagenet2012 --data_dir ~/tensorflow_datasets --output_dir runs/in
    python -m darts_tf.cli.train_imagenet --dataset /data/imagenet      # DIR/train/<class>/*, DIR/val/<class>/*
    python -m darts_tf.cli.train_imagenet --dataset imagenet_resized/32x32 --epochs 40 --output_dir runs/in32

Flags are the fields of `darts_tf.training.ImageNetConfig`; reports top-1 / top-5 error on the held-out split.
"""

from __future__ import annotations

import json

from absl import app

from darts_tf.cli.common import run_main
from darts_tf.cli.train import config_from_flags, define_config_flags, write_flags


def main(argv):
    from darts_tf import training

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")

    def body():
        config = config_from_flags(training.ImageNetConfig).validate()
        write_flags(config.output_dir, config.resume)
        metrics = training.train_imagenet(config)
        print(json.dumps(metrics, indent=1))

    run_main(body)


def run():
    """Console-script entry point (darts-train-imagenet)."""
    from darts_tf.training import ImageNetConfig

    define_config_flags(ImageNetConfig)
    app.run(main)


if __name__ == "__main__":
    run()
