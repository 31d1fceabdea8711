"""Architecture evaluation (paper sect. 3.2, A.2.1) and ImageNet transfer (A.2.3): a network built from a
genotype is trained from scratch with `model.fit`, checkpointed every epoch, and its artifacts written.

A run's output directory (this module is its one writer; readers use the constants below)::

    run_config.json, training_state.npz   per-epoch state for --resume (darts_tf.checkpoint)
    model.keras                           the trained network (written atomically)
    genotype.json                         its genotype
    data_info.json                        image shape, normalisation, class names (what export needs)
    metrics.json                          final train loss/accuracy, eval top-1/top-5, params, epochs, wall time
    tensorboard/                          TensorBoard logs (incl. learning rate and drop-path probability)
    saved_model/1/                        with `export=True`: the SavedModel (darts_tf.cnn.export; TF Serving layout)

`validation_portion` > 0 carves a validation split off the training set and reports accuracy on it, never
touching the test set: the paper's short-training selection of the best of several searched cells (sect. 3.2).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, Optional, Sequence

import keras
from absl import logging

from darts_tf import distribute
from darts_tf.distribute import STRATEGIES, make_strategy
from darts_tf.guards import FirstStepNotice, NonFiniteGuard
from darts_tf.io_utils import check_output_dir, save_model_atomic, write_json
from darts_tf.run_files import RunFiles
from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf.data import images, imagenet
from darts_tf.data.augment import AUGMENT_FLAG_METADATA, IMAGE_SIZE_METADATA, default_augmentation
from darts_tf.cnn.networks import NetworkCIFAR, NetworkImageNet, count_parameters, set_drop_path_prob
from darts_tf.cnn.nb201 import NB201Network  # (also registers it, so that darts-test / darts-export reload it)
from darts_tf.presets import Presets
from darts_tf.schedules import EpochCosineDecay, EpochExponentialDecay
from darts_tf.summaries import OneRateTensorBoard

NETWORKS = ("auto", "cifar", "imagenet")
TRAIN_GENOTYPE_KINDS = ("cnn", "nb201")  # darts-train: a DARTS cell (NetworkCIFAR) or a NAS-Bench-201 one (NB201Network)
# Flags that may differ between a run and its resumption (they do not change what is computed).
_RESUME_MAY_CHANGE = ("resume", "verbose", "export", "eval_every", "jit_compile", "strategy", "data_dir", "output_dir")
# ImageNet transfer: images at least this large get NetworkImageNet (stride-8 stem) under network='auto'.
_MIN_IMAGENET_NETWORK_SIZE = 64


# --------------------------------------------------------------------------------------
# Configs


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_common(cfg, min_layers: int = 3) -> None:
    """Checks shared by both configs; errors name the flag and the value received. `min_layers`: 3 for the DARTS
    networks (reduction cells at 1/3 and 2/3 depth), 1 for NAS-Bench-201's (its --layers is cells per stage)."""
    _check(isinstance(cfg.genotype, str) and cfg.genotype != "", f"genotype must be a published name or a JSON path. Received: genotype={cfg.genotype!r}")
    _check(isinstance(cfg.dataset, str) and cfg.dataset != "",
           f"dataset must be a tfds name, 'digits', an image folder or an .npz path. Received: dataset={cfg.dataset!r}")
    _check(cfg.crop_padding is None or cfg.crop_padding >= 0,
           f"crop_padding must be >= 0 (0 = no crop). Received: crop_padding={cfg.crop_padding}")
    _check(cfg.layers >= min_layers, f"layers must be >= 3 (two reduction cells at 1/3 and 2/3 depth). Received: layers={cfg.layers}"
           if min_layers == 3 else f"layers must be >= {min_layers}. Received: layers={cfg.layers}")
    _check(cfg.init_channels >= 1, f"init_channels must be >= 1. Received: init_channels={cfg.init_channels}")
    _check(cfg.batch_size >= 1, f"batch_size must be >= 1. Received: batch_size={cfg.batch_size}")
    _check(cfg.epochs >= 1, f"epochs must be >= 1. Received: epochs={cfg.epochs}")
    _check(cfg.learning_rate > 0, f"learning_rate must be > 0. Received: learning_rate={cfg.learning_rate}")
    _check(0 <= cfg.momentum < 1, f"momentum must be in [0, 1). Received: momentum={cfg.momentum}")
    _check(cfg.weight_decay >= 0, f"weight_decay must be >= 0. Received: weight_decay={cfg.weight_decay}")
    _check(0 <= cfg.drop_path_prob < 1, f"drop_path_prob must be in [0, 1). Received: drop_path_prob={cfg.drop_path_prob}")
    _check(cfg.auxiliary_weight >= 0, f"auxiliary_weight must be >= 0. Received: auxiliary_weight={cfg.auxiliary_weight}")
    _check(cfg.grad_clip >= 0, f"grad_clip must be >= 0 (0 = no clipping). Received: grad_clip={cfg.grad_clip}")
    _check(cfg.eval_every >= 0, f"eval_every must be >= 0 (0 = only at the end). Received: eval_every={cfg.eval_every}")
    _check(cfg.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={cfg.strategy!r}")
    _check(bool(cfg.output_dir), f"output_dir must be set. Received: output_dir={cfg.output_dir!r}")


@dataclasses.dataclass
class TrainConfig:
    """CIFAR-style evaluation of a cell (paper A.2.1). Defaults are the paper's; `digits` is the offline smoke set."""

    genotype: str = "DARTS_V2"  # published name (DARTS_V2, DARTS_V1, NASNet, AmoebaNet, ...) or genotype JSON path
    # 'cifar10', 'cifar100', 'digits' (offline), any tfds image dataset, a folder DIR/{train,test}/<class>/* or an .npz
    dataset: str = "cifar10"
    data_dir: Optional[str] = None  # tfds data_dir
    image_size: int = dataclasses.field(default=0, metadata=IMAGE_SIZE_METADATA)
    layers: int = 20
    init_channels: int = 36
    batch_size: int = 96
    epochs: int = 600
    learning_rate: float = 0.025  # cosine-annealed per epoch to learning_rate_min
    learning_rate_min: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False  # Nesterov momentum (NAS-Bench-201's protocol: the nb201 preset)
    weight_decay: float = 3e-4
    cutout_length: int = 16  # 0 = no cutout
    flip: Optional[bool] = dataclasses.field(default=None, metadata=AUGMENT_FLAG_METADATA["flip"])
    crop_padding: Optional[int] = dataclasses.field(default=None, metadata=AUGMENT_FLAG_METADATA["crop_padding"])
    drop_path_prob: float = 0.2  # reached at the last epoch; epoch e uses drop_path_prob * e / epochs
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    grad_clip: float = 5.0  # 0 = no clipping
    seed: int = 0
    validation_portion: float = 0.0  # 0: train on all of train, report test; > 0: report a validation split of train
    output_dir: str = "runs/eval"
    resume: bool = False
    jit_compile: bool = False
    # 'auto' (MirroredStrategy when > 1 GPU), 'mirrored', 'multi_worker' (TF_CONFIG; darts_tf.distribute), 'default';
    # batch_size is the global batch, split over every replica of every worker
    strategy: str = "auto"
    export: bool = False  # also write a SavedModel to output_dir/saved_model/1 (TF Serving's base_path/<version>)
    eval_every: int = 1  # evaluate the eval split every N epochs during training (0 = only at the end)
    verbose: int = 1  # fit's progress: 0 silent, 1 progress bar, 2 one line per epoch

    def network_kind(self) -> str:
        """'nb201' when the genotype is a NAS-Bench-201 cell (``NB201Network``), else 'cnn' (``NetworkCIFAR``)."""
        if not isinstance(self.genotype, str) or not self.genotype:
            return "cnn"  # refused by _check_common
        return gt.as_genotype(self.genotype, TRAIN_GENOTYPE_KINDS).kind

    def validate(self) -> "TrainConfig":
        nb201 = self.network_kind() == "nb201"
        _check_common(self, min_layers=1 if nb201 else 3)
        if nb201:  # NB201Network has neither an auxiliary head nor drop-path (NAS-Bench-201 trains without them)
            _check(not self.auxiliary and self.drop_path_prob == 0,
                   f"A NAS-Bench-201 network has no auxiliary head and no drop-path: pass --noauxiliary and "
                   f"--drop_path_prob=0, or use --preset nb201 (NAS-Bench-201's protocol). Received: "
                   f"auxiliary={self.auxiliary}, drop_path_prob={self.drop_path_prob}")
        _check(0 <= self.validation_portion < 1,
               f"validation_portion must be in [0, 1) (0 = report the test split). Received: validation_portion={self.validation_portion}")
        _check(self.cutout_length >= 0, f"cutout_length must be >= 0 (0 = off). Received: cutout_length={self.cutout_length}")
        _check(self.image_size >= 0, f"image_size must be >= 0 (0 = the data's own size). Received: image_size={self.image_size}")
        _check(0 <= self.learning_rate_min <= self.learning_rate,
               f"learning_rate_min must be in [0, learning_rate]. Received: learning_rate_min={self.learning_rate_min}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ImageNetConfig:
    """ImageNet transfer (paper A.2.3, mobile setting). `dataset` is 'imagenet2012' (tfds, tars in
    data_dir/downloads/manual), an image-folder tree DIR/{train,val}/<class>/*, or an in-memory tfds
    dataset (cifar100, imagenet_resized/32x32, ...) for cheaper transfer studies."""

    genotype: str = "DARTS_V2"
    dataset: str = "imagenet2012"
    data_dir: Optional[str] = None
    image_size: int = dataclasses.field(default=224, metadata={"help": "Crop size of streamed datasets (imagenet2012, an "
                                                                   "image folder); in-memory ones keep their own size."})
    network: str = "auto"  # 'imagenet' (NetworkImageNet), 'cifar' (NetworkCIFAR), 'auto': by image size
    layers: int = 14
    init_channels: int = 48
    batch_size: int = 128
    epochs: int = 250
    learning_rate: float = 0.1
    learning_rate_decay: float = 0.97  # multiplied in every epoch
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    drop_path_prob: float = 0.0
    # the augmentation of in-memory datasets (streamed ones get ImageNet's: random resized crop and flip)
    flip: Optional[bool] = dataclasses.field(default=None, metadata=AUGMENT_FLAG_METADATA["flip"])
    crop_padding: Optional[int] = dataclasses.field(default=None, metadata=AUGMENT_FLAG_METADATA["crop_padding"])
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    grad_clip: float = 5.0
    seed: int = 0
    output_dir: str = "runs/imagenet"
    resume: bool = False
    jit_compile: bool = False
    strategy: str = "auto"
    export: bool = False
    eval_every: int = 1
    verbose: int = 1

    def validate(self) -> "ImageNetConfig":
        _check_common(self)
        _check(self.image_size >= 8, f"image_size must be >= 8. Received: image_size={self.image_size}")
        _check(self.network in NETWORKS, f"network must be one of {', '.join(NETWORKS)}. Received: network={self.network!r}")
        _check(0 < self.learning_rate_decay <= 1,
               f"learning_rate_decay must be in (0, 1]. Received: learning_rate_decay={self.learning_rate_decay}")
        _check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1). Received: label_smoothing={self.label_smoothing}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def is_streamed_dataset(name: str) -> bool:
    """ImageNet from tfds or an image-folder tree: streamed from files rather than held in memory."""
    return name == "imagenet2012" or os.path.isdir(name)


# --------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class _DataSource:
    """What a run needs from its data: a per-epoch resumable train stream and a fixed eval set."""

    image_shape: tuple
    num_classes: int
    mean: tuple
    std: tuple
    class_names: tuple
    eval_split: str  # 'test' or 'validation'
    streamed: bool  # read from files every epoch (darts_tf.data.imagenet), not held in memory
    train_size: int
    eval_size: int
    steps_per_epoch: int
    train_fn: Any  # initial_epoch -> tf.data.Dataset of epochs initial_epoch..epochs-1
    eval_fn: Any  # () -> tf.data.Dataset

    def info(self) -> Dict[str, Any]:
        return {"image_shape": list(self.image_shape), "num_classes": self.num_classes, "mean": list(self.mean),
                "std": list(self.std), "class_names": list(self.class_names), "eval_split": self.eval_split,
                "streamed": self.streamed, "train_size": self.train_size, "eval_size": self.eval_size}


def eval_arrays(data: images.ImageData, split: str, validation_portion: float, seed: int):
    """(train_x, train_y, eval_x, eval_y): the validation split is carved from train exactly as in training."""
    if split == "test":
        return data.train_images, data.train_labels, data.test_images, data.test_labels
    if not 0 < validation_portion < 1:
        raise ValueError(f"split='validation' needs a validation_portion in (0, 1) (the one used in training). "
                         f"Received: validation_portion={validation_portion}")
    (x_tr, y_tr), (x_va, y_va) = images.split_train_validation(data.train_images, data.train_labels,
                                                               1.0 - validation_portion, seed)
    return x_tr, y_tr, x_va, y_va


def _in_memory_source(data: images.ImageData, dataset: str, batch_size: int, epochs: int, seed: int,
                      validation_portion: float, augment: images.AugmentConfig) -> _DataSource:
    split = "validation" if validation_portion > 0 else "test"
    x_tr, y_tr, x_ev, y_ev = eval_arrays(data, split, validation_portion, seed)
    if batch_size > len(x_tr):
        what = f"training split of {dataset!r}" + (f" after carving validation_portion={validation_portion}" if split == "validation" else "")
        raise ValueError(f"batch_size={batch_size} is larger than the {what} ({len(x_tr)} examples); lower --batch_size.")
    eval_batch = min(batch_size, len(x_ev))
    mean, std = data.mean, data.std

    def train_fn(initial_epoch):
        ds, _ = images.multi_epoch_dataset(x_tr, y_tr, batch_size, seed=seed, initial_epoch=initial_epoch, epochs=epochs,
                                           mean=mean, std=std, shuffle=True, augment=augment, drop_remainder=True)
        return ds

    def eval_fn():
        return images.epoch_dataset(x_ev, y_ev, eval_batch, seed=seed, epoch=0, mean=mean, std=std, shuffle=False,
                                    augment=None, drop_remainder=False)

    return _DataSource(data.image_shape, data.num_classes, tuple(mean), tuple(std), tuple(data.class_names), split,
                       False, len(x_tr), len(x_ev), len(x_tr) // batch_size, train_fn, eval_fn)


def _streamed_source(cfg: ImageNetConfig) -> _DataSource:
    def load(initial_epoch):
        return imagenet.imagenet_datasets(cfg.dataset, cfg.data_dir, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                        seed=cfg.seed, initial_epoch=initial_epoch, epochs=cfg.epochs)

    first = load(0)
    cache = {0: first}

    def train_fn(initial_epoch):
        return (cache.get(initial_epoch) or load(initial_epoch)).train

    return _DataSource((cfg.image_size, cfg.image_size, 3), first.num_classes, tuple(first.mean), tuple(first.std),
                       tuple(first.class_names), "validation", True, first.train_size, first.validation_size,
                       first.steps_per_epoch, train_fn, lambda: first.validation)


# --------------------------------------------------------------------------------------
# Callbacks and the shared run


class DropPathSchedule(keras.callbacks.Callback):
    """Sets the drop-path probability to `max_prob * epoch / epochs` at the start of each epoch (reference train.py)."""

    def __init__(self, max_prob: float, epochs: int):
        super().__init__()
        self.max_prob, self.epochs = float(max_prob), int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        set_drop_path_prob(self.model, self.max_prob * epoch / self.epochs)


class EpochScalars(keras.callbacks.Callback):
    """Adds the epoch's learning rate (`lr`) and drop-path probability to the epoch logs (progress bar,
    TensorBoard), and keeps the last epoch's logs for the checkpoint's metadata."""

    def __init__(self):
        super().__init__()
        self.last_logs: Dict[str, float] = {}
        self._lr = self._drop = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self._drop = float(keras.ops.convert_to_numpy(self.model.drop_path_prob))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self._lr
            logs["drop_path_prob"] = self._drop
            self.last_logs = {k: float(v) for k, v in logs.items()}


@dataclasses.dataclass
class _RunSpec:
    config: Any
    genotype: gt.Genotype
    source: _DataSource
    make_model: Any  # () -> keras.Model (inside the strategy scope)
    make_schedule: Any  # steps_per_epoch -> LearningRateSchedule
    label_smoothing: float = 0.0
    strategy: Any = None  # the tf.distribute.Strategy (made before any TF op: multi_worker needs that); None: by name
    write_dir: str = ""  # where this process writes: output_dir, or a non-chief worker's temporary directory


def _build(spec: _RunSpec) -> keras.Model:
    """The compiled network in the run's distribution strategy, every weight and optimizer slot built."""
    cfg, source = spec.config, spec.source
    with (spec.strategy or make_strategy(cfg.strategy)).scope():
        model = spec.make_model()
        model.build((None,) + tuple(source.image_shape))
        optimizer = keras.optimizers.SGD(spec.make_schedule(source.steps_per_epoch), momentum=cfg.momentum,
                                         nesterov=bool(getattr(cfg, "nesterov", False)))
        model.compile(optimizer=optimizer, auxiliary_weight=cfg.auxiliary_weight if cfg.auxiliary else 0.0,
                      weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip or None,
                      label_smoothing=spec.label_smoothing, jit_compile=cfg.jit_compile)
        optimizer.build(model.trainable_variables)
    distribute.fix_keras_multi_worker(model)
    return model


def _restore(cfg, model: keras.Model) -> Dict[str, Any]:
    """The checkpoint's metadata after restoring it with --resume ({} for a fresh run)."""
    meta: Dict[str, Any] = {}
    if cfg.resume and checkpoint.has_state(cfg.output_dir):
        meta = checkpoint.restore_state(cfg.output_dir, model)
        logging.info("Resuming %s from the end of epoch %d of %d.", cfg.output_dir, int(meta["epochs_done"]), cfg.epochs)
    elif cfg.resume:
        logging.info("No checkpoint in %s: starting from epoch 0.", cfg.output_dir)
    # every worker of a multi-worker run read the chief's checkpoint (output_dir must be storage they all read)
    distribute.check_same_epoch(model.distribute_strategy, int(meta.get("epochs_done", 0)), cfg.output_dir)
    return meta


def _sharded(dataset, source: _DataSource, model: keras.Model):
    """`dataset` as the workers of a multi-worker run split it: in-memory data by batch elements (every worker holds
    all of it), streamed data by TensorFlow's automatic policy (by files where there are enough)."""
    return dataset if source.streamed else distribute.shard_by_data(dataset, model.distribute_strategy)


def _fit(spec: _RunSpec, model: keras.Model, meta: Dict[str, Any], callbacks) -> EpochScalars:
    """`model.fit` from the checkpoint's epoch to the last, checkpointing every epoch; returns the epoch logger."""
    cfg, source, files = spec.config, spec.source, RunFiles(spec.write_dir or spec.config.output_dir)
    initial_epoch, start, wall_before = int(meta.get("epochs_done", 0)), time.time(), float(meta.get("wall_time_s", 0.0))
    scalars = EpochScalars()
    scalars.last_logs = dict(meta.get("last_logs", {}))
    scalars.wall_time = lambda: wall_before + time.time() - start

    def extra(epoch):
        return {"wall_time_s": scalars.wall_time(), "last_logs": scalars.last_logs}

    if initial_epoch < cfg.epochs:
        model.fit(_sharded(source.train_fn(initial_epoch), source, model), epochs=cfg.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=source.steps_per_epoch,
                  validation_data=_sharded(source.eval_fn(), source, model) if cfg.eval_every else None,
                  validation_freq=max(cfg.eval_every, 1), verbose=cfg.verbose, shuffle=False,
                  callbacks=[NonFiniteGuard(state_path=files.state), FirstStepNotice(), DropPathSchedule(cfg.drop_path_prob, cfg.epochs),
                             scalars, checkpoint.EpochCheckpoint(files.root, extra_fn=extra),
                             OneRateTensorBoard(files.tensorboard, write_graph=False), *callbacks])
    return scalars


def _final_metrics(spec: _RunSpec, model: keras.Model, scalars: EpochScalars) -> Dict[str, Any]:
    """metrics.json: the last epoch's train loss/accuracy and top-1/top-5 on the eval split."""
    cfg, source, split = spec.config, spec.source, spec.source.eval_split
    final = model.evaluate(_sharded(source.eval_fn(), source, model), return_dict=True, verbose=0)
    top1, top5 = float(final["accuracy"]), float(final["top5_accuracy"])
    last = scalars.last_logs
    return {"train_loss": last.get("loss"), "train_accuracy": last.get("accuracy"), "eval_split": split,
            f"{split}_loss": float(final["loss"]), f"{split}_top1_accuracy": top1, f"{split}_top5_accuracy": top5,
            f"{split}_top1_error": 1.0 - top1, f"{split}_top5_error": 1.0 - top5, "eval_examples": source.eval_size,
            "params_M": count_parameters(model) / 1e6, "epochs": cfg.epochs, "wall_time_s": scalars.wall_time(),
            "genotype": cfg.genotype, "dataset": cfg.dataset}


def _write_outputs(spec: _RunSpec, model: keras.Model, metrics: Dict[str, Any]) -> None:
    """model.keras, genotype.json, data_info.json, with --export the SavedModel, and metrics.json last."""
    cfg, source, split = spec.config, spec.source, spec.source.eval_split
    files = RunFiles(spec.write_dir or cfg.output_dir)
    save_model_atomic(model, files.model)
    gt.save_genotype(spec.genotype, files.genotype, metadata={"source": cfg.genotype})
    write_json(files.data_info, {**source.info(), "dataset": cfg.dataset})
    if cfg.export:
        from darts_tf.cnn.export import export_saved_model

        reported = (f"{split}_top1_accuracy", f"{split}_top5_accuracy", "params_M", "epochs")
        export_saved_model(model, files.saved_model, source.mean, source.std, class_names=source.class_names,
                           image_shape=source.image_shape, version=1,  # TF Serving's base_path/<version>/ layout
                           metadata={"dataset": cfg.dataset, "genotype": cfg.genotype, **{k: metrics[k] for k in reported}})
    write_json(files.metrics, metrics)


def _run(spec: _RunSpec, callbacks: Sequence[keras.callbacks.Callback]) -> Dict[str, Any]:
    """The whole run: check the directory, build, restore, fit, evaluate, write the outputs; returns metrics.json."""
    cfg, source = spec.config, spec.source
    strategy = spec.strategy or make_strategy(cfg.strategy)
    # The chief writes output_dir; another worker of a multi-worker run writes a temporary directory of its own
    # (removed at the end) and reads the chief's checkpoint from output_dir.
    spec = dataclasses.replace(spec, strategy=strategy, write_dir=distribute.worker_write_dir(cfg.output_dir, strategy))
    try:
        checkpoint.check_run_config(spec.write_dir, cfg.to_dict(), cfg.resume, ignore=_RESUME_MAY_CHANGE)
        checkpoint.start_run(cfg.seed)
        logging.info("Building the network (%d cells, C=%d) under %s ...", cfg.layers, cfg.init_channels,
                     distribute.describe(strategy))
        model = _build(spec)
        check_output_dir(spec.write_dir, checkpoint.state_size_bytes(model))
        logging.info("Genotype %s: %.3fM parameters (without the auxiliary head); %d train / %d %s examples, %d "
                     "steps/epoch.", cfg.genotype, count_parameters(model) / 1e6, source.train_size, source.eval_size,
                     source.eval_split, source.steps_per_epoch)
        scalars = _fit(spec, model, _restore(cfg, model), callbacks)
        metrics = _final_metrics(spec, model, scalars)
        _write_outputs(spec, model, metrics)
    finally:
        distribute.remove_worker_dir(spec.write_dir, cfg.output_dir)
    logging.info("%s top-1 error %.2f%%, top-5 error %.2f%% (%d examples); %.2fM params; %.0f s.", source.eval_split,
                 100 * metrics[f"{source.eval_split}_top1_error"], 100 * metrics[f"{source.eval_split}_top5_error"],
                 source.eval_size, metrics["params_M"], metrics["wall_time_s"])
    return metrics


def check_inputs(config) -> gt.Genotype:
    """What a training refuses before it loads data or writes a file: the config (`TrainConfig` or `ImageNetConfig`),
    the genotype and the output location. Returns the genotype."""
    config.validate()
    genotype = gt.as_genotype(config.genotype, TRAIN_GENOTYPE_KINDS if isinstance(config, TrainConfig) else "cnn")
    check_output_dir(config.output_dir)
    return genotype


def _load(config, data: Optional[images.ImageData], image_size: int = 0) -> images.ImageData:
    """`data` when given (arrays already in memory: the pipeline's ingested copy), else `config.dataset` loaded."""
    if data is not None:
        return data
    logging.info("Loading the dataset %s ...", config.dataset)
    return images.load_image_data(config.dataset, config.data_dir, image_size=image_size)


def train(config: TrainConfig, callbacks: Sequence[keras.callbacks.Callback] = (),
          data: Optional[images.ImageData] = None) -> Dict[str, Any]:
    """Trains NetworkCIFAR (paper A.2.1), or NB201Network for a NAS-Bench-201 genotype, on `data`, or on
    `config.dataset` when no data is given, and writes the run's artifacts; returns metrics.json. `config.dataset`
    names the data in the records either way."""
    genotype = check_inputs(config)
    strategy = make_strategy(config.strategy)  # before any TF op (multi_worker configures the collectives)
    data = _load(config, data, config.image_size)
    augment = default_augmentation(data.name, data.image_shape, config.flip, config.crop_padding, config.cutout_length)
    source = _in_memory_source(data, config.dataset, config.batch_size, config.epochs, config.seed,
                               config.validation_portion, augment)

    def make_model():
        if genotype.kind == "nb201":  # NAS-Bench-201's skeleton: C = init_channels, N = layers (cells per stage)
            return NB201Network(genotype, C=config.init_channels, N=config.layers, num_classes=source.num_classes)
        return NetworkCIFAR(genotype, C=config.init_channels, num_classes=source.num_classes, num_layers=config.layers,
                            auxiliary=config.auxiliary, seed=config.seed)

    def make_schedule(steps):
        return EpochCosineDecay(config.learning_rate, config.epochs, steps, config.learning_rate_min)

    return _run(_RunSpec(config, genotype, source, make_model, make_schedule, strategy=strategy), callbacks)


def train_imagenet(config: ImageNetConfig, callbacks: Sequence[keras.callbacks.Callback] = (),
                   data: Optional[images.ImageData] = None) -> Dict[str, Any]:
    """Transfer of a cell to ImageNet (paper A.2.3) or another image dataset (`data` when given, else
    `config.dataset`); returns metrics.json."""
    genotype = check_inputs(config)
    strategy = make_strategy(config.strategy)  # before any TF op (multi_worker configures the collectives)
    if data is None and is_streamed_dataset(config.dataset):
        logging.info("Opening the streamed dataset %s ...", config.dataset)
        source = _streamed_source(config)
    else:
        # In-memory datasets keep their image size; no cutout.
        data = _load(config, data)
        augment = default_augmentation(data.name, data.image_shape, config.flip, config.crop_padding, 0)
        source = _in_memory_source(data, config.dataset, config.batch_size, config.epochs, config.seed, 0.0, augment)
    network = config.network
    if network == "auto":
        network = "imagenet" if min(source.image_shape[:2]) >= _MIN_IMAGENET_NETWORK_SIZE else "cifar"
    cls = NetworkImageNet if network == "imagenet" else NetworkCIFAR

    def make_model():
        return cls(genotype, C=config.init_channels, num_classes=source.num_classes, num_layers=config.layers,
                   auxiliary=config.auxiliary, seed=config.seed)

    def make_schedule(steps):
        return EpochExponentialDecay(config.learning_rate, config.learning_rate_decay, steps)

    return _run(_RunSpec(config, genotype, source, make_model, make_schedule, config.label_smoothing,
                         strategy=strategy), callbacks)


# Named training settings (``--preset`` of darts-train; the flags given on the command line replace its values).
# `darts`: the paper's (A.2.1, the TrainConfig defaults). `nb201`: NAS-Bench-201's CIFAR protocol (Dong & Yang, ICLR
# 2020, sect. 3; D-X-Y/AutoDL-Projects configs/nas-benchmark/hyper-opts/200E.config): 200 epochs of batch 256, SGD
# with Nesterov momentum 0.9, lr 0.1 cosine-annealed to 0, no warm-up, weight decay 5e-4, softmax cross-entropy; no
# auxiliary head, drop-path, cutout or gradient clip; random crop (padding 4) and flip (the CIFAR default here).
# The network is the genotype's: C = init_channels 16, N = layers 5 cells per stage.
TRAIN_PRESETS = Presets("train")
register_train_preset = TRAIN_PRESETS.register
get_train_preset = TRAIN_PRESETS.config

register_train_preset("darts", TrainConfig())
register_train_preset("nb201", TrainConfig(genotype="ResNet", layers=5, init_channels=16, batch_size=256, epochs=200,
                                           learning_rate=0.1, learning_rate_min=0.0, momentum=0.9, nesterov=True,
                                           weight_decay=5e-4, cutout_length=0, drop_path_prob=0.0, auxiliary=False,
                                           grad_clip=0.0, output_dir="runs/nb201"))
