"""The CNN task (paper sect. 3.1.1, 3.2, 3.3): convolutional cells searched on images, selected by a short
training on a validation split, evaluated CIFAR-style (A.2.1) and transferred ImageNet-style (A.2.3).

The library calls are ``darts_tf.cnn.search.run_search``, ``darts_tf.cnn.train.train`` /
``train_imagenet`` and ``darts_tf.cnn.export``; this module turns a stage's plain settings into their configs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, List

import numpy as np

from darts_tf import task as base
from darts_tf.cnn import export
from darts_tf.cnn import search as cnn_search
from darts_tf.cnn import train as cnn_train
from darts_tf.run_files import RunFiles

CHECK_EXAMPLES = 64  # test images the exported SavedModel is run on


@base.register_task
class CNNTask(base.Task):
    kind = "cnn"
    data_kind = "images"
    alpha_names = ("alpha_normal", "alpha_reduce")
    optional_alpha_names = ("beta_normal", "beta_reduce")  # --edge_normalization (genotypes.EDGE_BETA_NAMES)
    search_config = cnn_search.SearchConfig
    select_config = cnn_train.TrainConfig
    evaluate_config = cnn_train.TrainConfig
    transfer_config = cnn_train.ImageNetConfig
    selection_metric = "validation_accuracy"
    higher_is_better = True
    transfer_reads_dataset = False  # ImageNet is streamed from tfds or an image folder (`dataset` of the config)

    def load_data(self, dataset: base.Dataset):
        """The ingested images as ``darts_tf.data.images.ImageData``."""
        self.check_data(dataset)
        return dataset.image_data()

    def primitives(self, config: cnn_search.SearchConfig) -> List[str]:
        return config.primitive_list

    def run_search(self, config, data, extra_flags, verbose):
        return cnn_search.run_search(config, verbose=verbose, data=data, extra_flags=extra_flags)

    def short_train(self, dataset, genotype_path, values, tensorboard_dir, stage="select") -> Dict[str, Any]:
        """`darts_tf.cnn.train.train` on the ingested arrays with `validation_portion` in (0, 1): it reports the
        carved split."""
        data = self.load_data(dataset)
        with tempfile.TemporaryDirectory(prefix="select-") as tmp:
            cfg = base.config_from_dict(cnn_train.TrainConfig, values, stage, genotype=genotype_path,
                                         dataset=dataset.name, output_dir=os.path.join(tmp, "run"), resume=False,
                                         export=False)
            if not 0 < cfg.validation_portion < 1:
                raise ValueError(f"[stage '{stage}'] validation_portion must be in (0, 1): selection never looks at "
                                 f"the test set. Received: validation_portion={cfg.validation_portion}")
            metrics = cnn_train.train(cfg, data=data)
            shutil.copytree(RunFiles(cfg.output_dir).tensorboard, tensorboard_dir)
        return {"validation_accuracy": metrics["validation_top1_accuracy"],
                "validation_loss": metrics["validation_loss"], "params_M": metrics["params_M"],
                "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"]}

    def train(self, dataset, genotype_path, values, run_dir, stage="evaluate", resume=False) -> Dict[str, Any]:
        """`darts_tf.cnn.train.train` on all of the ingested train arrays, reporting the test split, with the
        SavedModel export."""
        data = self.load_data(dataset)
        cfg = base.config_from_dict(cnn_train.TrainConfig, values, stage, genotype=genotype_path,
                                     dataset=dataset.name, validation_portion=0.0, resume=resume, export=True,
                                     output_dir=run_dir)
        return dict(cnn_train.train(cfg, data=data))

    def transfer(self, dataset, genotype_path, values, run_dir, stage="transfer", resume=False) -> Dict[str, Any]:
        """`darts_tf.cnn.train.train_imagenet` on the dataset the settings name (the mobile setting, A.2.3)."""
        if dataset is not None:
            raise ValueError(f"[stage '{stage}'] the cnn transfer reads the dataset its settings name (dataset=...), "
                             f"not an ingested Dataset artifact. Received: {dataset.path!r}")
        cfg = base.config_from_dict(cnn_train.ImageNetConfig, values, stage, genotype=genotype_path, resume=resume,
                                     output_dir=run_dir)
        return dict(cnn_train.train_imagenet(cfg))

    def load_predictor(self, export_dir: str) -> export.Predictor:
        return export.load_predictor(export_dir)

    def check_export(self, export_dir, dataset=None) -> Dict[str, Any]:
        """Predicts the first test images of `dataset` (or blank images): one probability row per image."""
        predictor = self.load_predictor(export_dir)
        if dataset is not None and dataset.kind == self.data_kind:
            images = self.load_data(dataset)
            x, y = images.test_images[:CHECK_EXAMPLES], images.test_labels[:CHECK_EXAMPLES]
        else:
            x, y = np.zeros((4, *predictor.image_shape), np.uint8), None
        probs = predictor.predict(x)
        if probs.shape[0] != len(x) or not np.allclose(probs.sum(-1), 1.0, atol=1e-3):
            raise RuntimeError(f"The SavedModel at {export_dir!r} does not return one probability row per image.")
        out = {"examples": int(len(x))}
        if y is not None:
            out["accuracy"] = float(np.mean(probs.argmax(-1) == y))
        return out
