"""darts-train-imagenet: transfers a cell to ImageNet (paper A.2.3: 14 cells, C=48, batch 128, 250 epochs,
lr 0.1 x0.97 per epoch, label smoothing 0.1, wd 3e-5) or to another image dataset for a cheaper study.

    python -m darts_tf.cli.train_imagenet --dataset imagenet2012 --data_dir ~/tensorflow_datasets --output_dir runs/in
    python -m darts_tf.cli.train_imagenet --dataset /data/imagenet      # DIR/train/<class>/*, DIR/val/<class>/*
    python -m darts_tf.cli.train_imagenet --dataset imagenet_resized/32x32 --epochs 40 --output_dir runs/in32

Flags are the fields of `darts_tf.cnn.train.ImageNetConfig`; reports top-1 / top-5 error on the held-out split.
"""

from __future__ import annotations

from darts_tf.cli import common
from darts_tf.cli.train import HELP, define_config_flags, run_training

IMAGENET_HELP = {
    **HELP,
    "learning_rate": "Initial SGD learning rate, multiplied by learning_rate_decay every epoch (exponential decay).",
    "dataset": "imagenet2012 (tfds; the tars in data_dir/downloads/manual), an image-folder tree DIR/{train,val}/"
               "<class>/* (streamed), or an in-memory dataset: a tfds image dataset (cifar100, imagenet_resized/32x32, "
               "digits, ...) or an .npz with x_train, y_train, x_test, y_test.",
}


def main(argv):
    from darts_tf.cnn import train

    run_training(argv, train.ImageNetConfig, train.train_imagenet)


def run():
    """Console-script entry point (darts-train-imagenet)."""
    from darts_tf.cnn.train import ImageNetConfig

    common.start(main, lambda: define_config_flags(ImageNetConfig, IMAGENET_HELP))


if __name__ == "__main__":
    run()
