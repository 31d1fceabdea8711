"""Running an architecture search end to end: data, supernet, bilevel `fit`, per-epoch genotypes, TensorBoard,
checkpoint/resume. ``run_bilevel_search`` is shared by the CNN and RNN searches; ``run_cnn_search`` is the
CIFAR-10 search of the paper (sect. 3.1.1, A.1.1).

Output directory layout (``SearchOutputs`` names every file; nothing else hard-codes them)::

    run_config.json        the flags of the run (a resume with other flags is refused)
    training_state.npz     weights, alphas, both optimiser states, RNG states, epochs done (every epoch)
    genotype.json          the genotype derived from the final alphas (with lineage metadata)
    genotypes/epoch_NNN.json  the genotype after every epoch
    alphas.npz             final alphas by name;  alpha_history.npz: [epochs, edges, ops] per name
    metrics.json           per-epoch history (loss, val_loss, accuracies, lr) and the final values
    tensorboard/           Keras scalars (train/, validation/) and architecture/ (alpha heatmaps, genotype text)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf.bilevel import ARCH_MODES, EXACT_HVP_METHODS, check_arch_mode
from darts_tf.io_utils import atomic_savez, write_json


@dataclasses.dataclass(frozen=True)
class SearchOutputs:
    """File names of a search output directory."""

    root: str

    def path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    @property
    def genotype(self):
        return self.path("genotype.json")

    def epoch_genotype(self, epoch: int):
        return self.path("genotypes", f"epoch_{epoch:03d}.json")

    @property
    def alphas(self):
        return self.path("alphas.npz")

    @property
    def alpha_history(self):
        return self.path("alpha_history.npz")

    @property
    def metrics(self):
        return self.path("metrics.json")

    @property
    def tensorboard(self):
        return self.path("tensorboard")


def alpha_heatmap(weights: np.ndarray, cell: int = 8) -> np.ndarray:
    """softmax(alpha) [edges, ops] as a [1, edges*cell, ops*cell, 1] image for TensorBoard (1 = white)."""
    img = np.kron(np.asarray(weights, np.float32), np.ones((cell, cell), np.float32))
    return img[None, :, :, None]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class ArchitectureLogger(keras.callbacks.Callback):
    """After every epoch: the derived genotype (JSON + TensorBoard text), the alphas (history file +
    softmax heatmaps), and the epoch's metrics. The model must provide ``genotype()`` and ``alphas_numpy()``."""

    def __init__(self, outputs: SearchOutputs, lineage: Dict[str, Any], initial_epoch: int = 0):
        super().__init__()
        self.outputs, self.lineage = outputs, lineage
        self.writer = tf.summary.create_file_writer(os.path.join(outputs.tensorboard, "architecture"))
        self.history: Dict[str, List[np.ndarray]] = {}
        self.metrics_history: List[Dict[str, float]] = []
        if initial_epoch and os.path.isfile(outputs.alpha_history):
            with np.load(outputs.alpha_history) as data:
                self.history = {k: list(data[k][:initial_epoch]) for k in data.files}
        if initial_epoch and os.path.isfile(outputs.metrics):
            with open(outputs.metrics) as f:
                self.metrics_history = json.load(f).get("history", [])[:initial_epoch]

    def on_epoch_end(self, epoch, logs=None):
        genotype = self.model.genotype()
        alphas = self.model.alphas_numpy()
        gt.save_genotype(genotype, self.outputs.epoch_genotype(epoch + 1), {**self.lineage, "epoch": epoch + 1})
        for name, value in alphas.items():
            self.history.setdefault(name, []).append(value)
        atomic_savez(self.outputs.alpha_history, {k: np.stack(v) for k, v in self.history.items()})
        self.metrics_history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        write_json(self.outputs.metrics, {"history": self.metrics_history})
        with self.writer.as_default(step=epoch + 1):
            for name, value in alphas.items():
                tf.summary.image(f"softmax_{name}", alpha_heatmap(_softmax(value)))
                tf.summary.histogram(name, value)
            tf.summary.text("genotype", gt.genotype_to_json(genotype))
        self.writer.flush()
        logging.info("epoch %d genotype: %s", epoch + 1, genotype)


class StopAfterEpochs(keras.callbacks.Callback):
    """Stops training after `n` epochs of this call (used to simulate a killed run in tests)."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            self.model.stop_training = True


def run_bilevel_search(model, dataset, steps_per_epoch: int, epochs: int, output_dir: str, config: Dict[str, Any],
                       resume: bool, callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto") -> Dict[str, Any]:
    """Fits a compiled `BilevelSearchModel` on a ``{'train', 'validation'}`` dataset factory.

    `dataset` is a function ``initial_epoch -> tf.data.Dataset`` covering epochs initial_epoch..epochs-1.
    Writes everything ``SearchOutputs`` lists; returns {'genotype', 'genotype_path', 'metrics', 'output_dir'}.
    """
    outputs = SearchOutputs(output_dir)
    checkpoint.check_run_config(output_dir, config, resume)
    initial_epoch = 0
    if resume and checkpoint.has_state(output_dir):
        initial_epoch = int(checkpoint.restore_state(output_dir, model)["epochs_done"])
        logging.info("Resuming search from %s after epoch %d", output_dir, initial_epoch)
    lineage = {"stage": "search", "output_dir": os.path.abspath(output_dir),
               **{k: config[k] for k in ("dataset", "seed", "arch_mode") if k in config}, "flags": config}
    start = time.time()
    if initial_epoch < epochs:
        logger = ArchitectureLogger(outputs, lineage, initial_epoch)
        model.fit(dataset(initial_epoch), epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                  verbose=verbose, callbacks=[
                      keras.callbacks.TensorBoard(outputs.tensorboard, update_freq="epoch", write_graph=False),
                      logger, checkpoint.EpochCheckpoint(output_dir), *callbacks])
        history = logger.metrics_history
    else:
        history = json.load(open(outputs.metrics))["history"] if os.path.isfile(outputs.metrics) else []
    epochs_done = history[-1]["epoch"] if history else initial_epoch
    genotype = model.genotype()
    alphas = model.alphas_numpy()
    atomic_savez(outputs.alphas, alphas)
    metrics = {"history": history, "final": history[-1] if history else {}, "epochs_done": epochs_done,
               "wall_time_s": time.time() - start}
    write_json(outputs.metrics, metrics)
    if epochs_done >= epochs:  # only a finished search publishes its genotype
        gt.save_genotype(genotype, outputs.genotype, {**lineage, "epoch": epochs_done})
    return {"genotype": genotype, "genotype_path": outputs.genotype, "metrics": metrics, "output_dir": output_dir,
            "alphas": alphas}


# ------------------------------------------------------------------------------------------ CNN search


@dataclasses.dataclass
class SearchConfig:
    """The CIFAR-10 search of the paper (A.1.1); defaults are the reference's train_search.py."""

    output_dir: str = ""
    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    download: bool = True  # let tfds download the dataset when it is not prepared in data_dir
    batch_size: int = 64
    epochs: int = 50
    init_channels: int = 16
    layers: int = 8
    nodes: int = gt.CNN_STEPS  # intermediate nodes per cell
    primitives: str = ",".join(gt.CNN_PRIMITIVES)  # candidate ops (a subset restricts the space)
    seed: int = 2
    train_portion: float = 0.5
    arch_mode: str = "first_order"
    xi: Optional[float] = None  # None: the current weight learning rate, as the paper
    exact_recompute: bool = True  # second_order_exact: recompute the train pass for the Hessian term (less memory)
    exact_hvp: str = "reverse"  # second_order_exact: the Hessian term reverse over reverse, or "forward" over reverse
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    cutout: bool = False
    cutout_length: int = 16
    jit_compile: bool = False
    mixed_precision: bool = False
    deterministic: bool = False
    resume: bool = False

    def validate(self) -> "SearchConfig":
        if not self.output_dir:
            raise ValueError("output_dir is required: the directory for the genotype, alphas, logs and checkpoints.")
        check_arch_mode(self.arch_mode)
        if self.exact_hvp not in EXACT_HVP_METHODS:
            raise ValueError(f"--exact_hvp must be one of {', '.join(EXACT_HVP_METHODS)}. Received: exact_hvp={self.exact_hvp!r}")
        positive = {"batch_size": self.batch_size, "epochs": self.epochs, "init_channels": self.init_channels,
                    "layers": self.layers}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name} must be >= 1. Received: {name}={value}")
        if self.layers < 3:
            raise ValueError(f"--layers must be >= 3 (reduction cells sit at 1/3 and 2/3 of the depth). Received: layers={self.layers}")
        if self.nodes < 1:
            raise ValueError(f"--nodes must be >= 1. Received: nodes={self.nodes}")
        unknown = [p for p in self.primitive_list if p not in gt.CNN_PRIMITIVES]
        if unknown or len(self.primitive_list) < 2:
            raise ValueError(f"--primitives must be a comma-separated subset (at least 2) of {', '.join(gt.CNN_PRIMITIVES)}. "
                             f"Received: {self.primitives!r}")
        if not 0.0 < self.train_portion < 1.0:
            raise ValueError(f"--train_portion must be in (0, 1): the share of the training split that trains the "
                             f"weights (the rest trains alpha). Received: train_portion={self.train_portion}")
        for name in ("learning_rate", "learning_rate_min", "arch_learning_rate", "weight_decay", "arch_weight_decay",
                     "momentum", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0. Received: {name}={getattr(self, name)}")
        if self.learning_rate_min > self.learning_rate:
            raise ValueError(f"--learning_rate_min ({self.learning_rate_min}) must not exceed --learning_rate ({self.learning_rate}).")
        if self.mixed_precision and not tf.config.list_physical_devices("GPU"):
            raise ValueError("--mixed_precision needs a GPU (float16 kernels); none is visible. Drop the flag on CPU.")
        return self

    @property
    def primitive_list(self):
        return [p.strip() for p in self.primitives.split(",") if p.strip()]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def build_cnn_search_model(config: SearchConfig, input_shape, num_classes: int, steps_per_epoch: int):
    """The compiled supernet with the paper's optimisers (SGD + cosine for w, Adam for alpha)."""
    from darts_tf.search_space import build_cnn_search_network

    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_cnn_search_network(input_shape, num_classes, C=config.init_channels, num_layers=config.layers,
                                     steps=config.nodes, multiplier=config.nodes, primitives=config.primitive_list,
                                     arch_mode=config.arch_mode, xi=config.xi, weight_decay=config.weight_decay,
                                     arch_weight_decay=config.arch_weight_decay, grad_clip=config.grad_clip,
                                     exact_recompute=config.exact_recompute, exact_hvp=config.exact_hvp)
    return compile_search_model(model, config, steps_per_epoch)


def compile_search_model(model, config, steps_per_epoch: int, beta_1: float = 0.5):
    from darts_tf.schedules import EpochCosineDecay

    lr = EpochCosineDecay(config.learning_rate, config.epochs, steps_per_epoch, config.learning_rate_min)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=config.momentum),
                  arch_optimizer=keras.optimizers.Adam(config.arch_learning_rate, beta_1=beta_1, beta_2=0.999),
                  jit_compile=config.jit_compile)
    return model


def run_cnn_search(config: SearchConfig, callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                   data=None, extra_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """DARTS on an image dataset: returns the final genotype and metrics, writes ``SearchOutputs``.

    `data` (an ``images.ImageData``) is used instead of loading ``config.dataset`` when given (the pipeline's
    ingested copy); `extra_flags` are recorded with the run's flags (e.g. the dataset hash).
    """
    from darts_tf.data import images

    config.validate()
    checkpoint.start_run(config.seed, config.deterministic)
    if data is None:
        data = images.load_image_data(config.dataset, config.data_dir, download=config.download)
    size = data.image_shape[0]
    augment = images.AugmentConfig.for_image_size(size, flip=data.name != "digits",
                                                  cutout_length=config.cutout_length if config.cutout else 0)

    def stream(initial_epoch):
        return images.search_dataset(data.train_images, data.train_labels, config.batch_size, config.train_portion,
                                     seed=config.seed, initial_epoch=initial_epoch, epochs=config.epochs,
                                     augment=augment, mean=data.mean, std=data.std)

    _, steps = stream(0)
    model = build_cnn_search_model(config, data.image_shape, data.num_classes, steps)
    logging.info("CNN search: %s, %d train images, %d steps/epoch, mode %s", data.name, len(data.train_images), steps,
                 config.arch_mode)
    return run_bilevel_search(model, lambda e: stream(e)[0], steps, config.epochs, config.output_dir,
                              {**config.to_dict(), **(extra_flags or {})}, config.resume, callbacks, verbose)


def run_random_search(output_dir: str, kind: str = "cnn", num_samples: int = 8, seed: int = 0) -> Dict[str, Any]:
    """The random-search baseline: genotypes sampled uniformly from the same space, in the search's format
    (``genotypes/sample_NNN.json`` for every sample; ``genotype.json`` is sample 0 — pick the best with `select`)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1. Received: {num_samples}")
    outputs = SearchOutputs(output_dir)
    paths = []
    for i in range(num_samples):
        genotype = gt.random_genotype(seed * 100003 + i, kind)
        path = outputs.path("genotypes", f"sample_{i:03d}.json")
        gt.save_genotype(genotype, path, {"stage": "random_search", "seed": seed, "sample": i, "kind": kind})
        paths.append(path)
    first = gt.load_genotype_file(paths[0])
    gt.save_genotype(first, outputs.genotype, {"stage": "random_search", "seed": seed, "sample": 0, "kind": kind})
    write_json(outputs.metrics, {"random_search": True, "num_samples": num_samples, "samples": paths})
    return {"genotype": first, "genotype_path": outputs.genotype, "samples": paths, "output_dir": output_dir}


__all__ = ["SearchConfig", "SearchOutputs", "run_cnn_search", "run_bilevel_search", "run_random_search",
           "ArchitectureLogger", "ARCH_MODES"]
