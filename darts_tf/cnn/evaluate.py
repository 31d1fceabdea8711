"""Evaluating a trained CNN (``darts-test``): top-1/top-5 of a run's ``model.keras`` on the test split, or on the
validation split carved from train exactly as the training run carved it; unset settings come from the run's
``run_config.json``."""

from __future__ import annotations

from typing import Any, Dict, Optional

import keras

from darts_tf.cnn.train import eval_arrays, is_streamed_dataset
from darts_tf import run_files
from darts_tf import io_utils
from darts_tf.io_utils import load_json
from darts_tf.data import images, imagenet
from darts_tf.run_files import RunFiles, run_dir_of


def _read_json_beside(model_path: str, name: str) -> Dict[str, Any]:
    path = RunFiles(run_dir_of(model_path)).path(name)
    if io_utils.isfile(path):
        return load_json(path, name, f"restore a copy of {path} from the run, or delete it and pass the settings as flags.")
    return {}


def read_run_config(model_path: str) -> Dict[str, Any]:
    """The flags of the run that wrote `model_path` (run_config.json beside it, or in it), or {}."""
    return _read_json_beside(model_path, run_files.RUN_CONFIG)


def read_data_info(model_path: str) -> Dict[str, Any]:
    """data_info.json beside `model_path` (image shape, mean/std, class names), or {}."""
    return _read_json_beside(model_path, run_files.DATA_INFO)


def _model_file(model_path: str) -> str:
    return RunFiles(model_path).model if io_utils.isdir(model_path) else model_path


def load_model(model_path: str) -> keras.Model:
    """A trained network from `model.keras` (or a run directory holding one), compiled for evaluation."""
    model_path = _model_file(model_path)
    if not io_utils.isfile(model_path):
        raise FileNotFoundError(f"Model file {model_path!r} does not exist; pass the model.keras written by darts-train "
                                f"(or its output directory).")
    model = keras.models.load_model(model_path, compile=False)
    model.compile(optimizer="sgd")
    return model


def model_image_shape(model: keras.Model) -> Optional[tuple]:
    shape = (model.get_build_config() or {}).get("input_shape")
    return tuple(shape[1:]) if shape else None


def evaluate(model_path: str, dataset: Optional[str] = None, data_dir: Optional[str] = None,
             split: str = "test", validation_portion: Optional[float] = None, seed: Optional[int] = None,
             batch_size: Optional[int] = None, image_size: Optional[int] = None) -> Dict[str, Any]:
    """Top-1/top-5 accuracy and error of a saved model on the test split, or on the validation split carved from
    train with the training run's seed and portion. Unset arguments come from the run's run_config.json."""
    model_path = _model_file(model_path)
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation'. Received: split={split!r}")
    run = read_run_config(model_path)
    dataset = dataset or run.get("dataset")
    if not dataset:
        raise ValueError(f"No dataset given and no {run_files.RUN_CONFIG} beside {model_path!r}; pass --dataset.")
    data_dir = data_dir if data_dir is not None else run.get("data_dir")
    seed = int(seed if seed is not None else run.get("seed", 0))
    portion = float(validation_portion if validation_portion is not None else run.get("validation_portion", 0.0))
    batch_size = int(batch_size or run.get("batch_size", 96))
    model = load_model(model_path)
    expected = model_image_shape(model)

    # Streamed as in training (data_info.json says how the run read it; older runs: by the dataset's kind).
    streamed = read_data_info(model_path).get("streamed", is_streamed_dataset(dataset) and "network" in run)
    if streamed:
        size = int(image_size or run.get("image_size", 224))
        data = imagenet.imagenet_datasets(dataset, data_dir, image_size=size, batch_size=batch_size, seed=seed)
        eval_ds, n, split, shape = data.validation, data.validation_size, "validation", (size, size, 3)
    else:
        if image_size is None:  # darts-train's image_size resized the data; darts-train-imagenet's is a crop size
            image_size = 0 if "network" in run else run.get("image_size", 0)
        size = int(image_size)
        data = images.load_image_data(dataset, data_dir, image_size=size)
        _, _, x_ev, y_ev = eval_arrays(data, split, portion, seed)
        eval_ds = images.epoch_dataset(x_ev, y_ev, min(batch_size, len(x_ev)), seed=seed, epoch=0, mean=data.mean,
                                       std=data.std, shuffle=False, augment=None, drop_remainder=False)
        n, shape = len(x_ev), data.image_shape
    if expected is not None and tuple(expected) != tuple(shape):
        raise ValueError(f"The model expects images of shape {tuple(expected)} but dataset {dataset!r} has {tuple(shape)}; "
                         f"pass the dataset the model was trained on.")
    result = model.evaluate(eval_ds, return_dict=True, verbose=0)
    top1, top5 = float(result["accuracy"]), float(result["top5_accuracy"])
    return {"split": split, "dataset": dataset, "num_examples": n, "loss": float(result["loss"]),
            "top1_accuracy": top1, "top5_accuracy": top5, "top1_error": 1.0 - top1, "top5_error": 1.0 - top5}
