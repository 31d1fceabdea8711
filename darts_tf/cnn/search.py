"""The CNN architecture search of the paper (sect. 3.1.1, A.1.1): image data, the supernet of
``darts_tf.cnn.search_space`` and its optimisers, handed to the shared loop ``darts_tf.search.run_bilevel_search``
(output layout: ``darts_tf.run_files``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import keras
import tensorflow as tf
from absl import logging

from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf.bilevel import FLAG_METADATA, BilevelConfig, check_replica_batch
from darts_tf.collapse import GUARD_FLAG_METADATA, ROBUST, CollapseGuards, CollapseSchedule
from darts_tf.data.augment import AUGMENT_FLAG_METADATA, IMAGE_SIZE_METADATA, default_augmentation
from darts_tf.distribute import SEARCH_STRATEGY_METADATA, check_strategy_name, fix_keras_multi_worker, make_strategy
from darts_tf.early_stop import check_monitor_flags, monitor_field
from darts_tf.io_utils import check_output_dir
from darts_tf.presets import Presets
from darts_tf.search import run_bilevel_search, run_on_workers
from darts_tf.cnn.nb201_lookup import LOOKUP_FLAG_METADATA
from darts_tf.cnn.search_space import build_cnn_search_network, check_partial_channels

SEARCH_SPACES = ("darts", "nb201")  # --search_space: DARTS' cells, NAS-Bench-201's (darts_tf.cnn.nb201)


@dataclasses.dataclass
class SearchConfig:
    """The CIFAR-10 search of the paper (A.1.1); defaults are the reference's train_search.py."""

    output_dir: str = ""
    dataset: str = "cifar10"  # a tfds name, 'digits', a folder DIR/{train,test}/<class>/* or an .npz (darts_tf.data.images)
    data_dir: Optional[str] = None
    download: bool = True  # let tfds download the dataset when it is not prepared in data_dir
    image_size: int = dataclasses.field(default=0, metadata=IMAGE_SIZE_METADATA)
    flip: Optional[bool] = dataclasses.field(default=None, metadata=AUGMENT_FLAG_METADATA["flip"])
    crop_padding: Optional[int] = dataclasses.field(default=None, metadata=AUGMENT_FLAG_METADATA["crop_padding"])
    batch_size: int = 64
    epochs: int = 50
    # the cell space: DARTS' (the paper's) or NAS-Bench-201's (darts_tf.cnn.nb201; --layers = cells per stage)
    search_space: str = dataclasses.field(default="darts", metadata={"choices": SEARCH_SPACES, "help": (
        "darts: the paper's cells (normal + reduction, --nodes, --primitives). nb201: NAS-Bench-201's cell (4 nodes, "
        "6 edges, ops " + ", ".join(gt.NB201_PRIMITIVES) + ") in its fixed skeleton, --layers cells per stage "
        "(3 stages, ResNet reduction blocks), top-1 op per edge; its genotype is NAS-Bench-201's architecture string. "
        "Without --preset, --search_space=nb201 starts from the nb201 preset (C=16, N=5, NAS-Bench-201's DARTS "
        "settings).")})
    # NAS-Bench-201 / NATS-Bench lookup of the derived cell after every epoch (darts_tf.cnn.nb201_lookup)
    nb201_benchmark: str = dataclasses.field(default="", metadata=LOOKUP_FLAG_METADATA["nb201_benchmark"])
    nb201_dataset: str = dataclasses.field(default="cifar10", metadata=LOOKUP_FLAG_METADATA["nb201_dataset"])
    init_channels: int = 16
    layers: int = 8
    nodes: int = dataclasses.field(default=gt.CNN_STEPS, metadata={"help": "Intermediate nodes per cell (each takes 2 "
                                   "inputs; the cell outputs the concatenation of all of them)."})
    primitives: str = dataclasses.field(default=",".join(gt.CNN_PRIMITIVES), metadata={"help": (
        "Candidate ops of every edge, comma-separated, in alpha's column order: a subset (at least 2) of "
        + ", ".join(gt.CNN_PRIMITIVES) + ".")})
    # PC-DARTS (Xu et al., ICLR 2020; darts_tf.cnn.search_space): both off is plain DARTS
    partial_channels: int = dataclasses.field(default=1, metadata={"help": (
        "PC-DARTS' partial channel connections: 1/K of each edge's channels go through its mixed op, the rest bypass "
        "it (a 2x2 max pool on reduction edges), then a channel shuffle. 1 = every channel (DARTS); K must divide "
        "--init_channels.")})
    edge_normalization: bool = dataclasses.field(default=False, metadata={"help": (
        "PC-DARTS' edge normalisation: per cell type an architecture vector beta over the edges, softmax over each "
        "node's inputs, which weighs each edge's output in the node sum and its strength when the genotype is derived "
        "(saved in alphas.npz as beta_normal, beta_reduce).")})
    seed: int = 2
    train_portion: float = 0.5
    # the bilevel step's settings (with weight_decay, arch_weight_decay, grad_clip below): bilevel_config();
    # flag help in darts_tf.bilevel.FLAG_METADATA
    arch_mode: str = dataclasses.field(default="first_order", metadata=FLAG_METADATA["arch_mode"])
    xi: Optional[float] = dataclasses.field(default=None, metadata=FLAG_METADATA["xi"])
    exact_recompute: bool = dataclasses.field(default=True, metadata=FLAG_METADATA["exact_recompute"])
    exact_hvp: str = dataclasses.field(default="reverse", metadata=FLAG_METADATA["exact_hvp"])
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_learning_rate: float = 3e-4
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    # collapse guards (darts_tf.collapse; all off: plain DARTS): guards_config(); the `robust` preset turns them on
    skip_dropout: float = dataclasses.field(default=0.0, metadata=GUARD_FLAG_METADATA["skip_dropout"])
    max_skip_connects: int = dataclasses.field(default=0, metadata=GUARD_FLAG_METADATA["max_skip_connects"])
    aux_skip_beta: float = dataclasses.field(default=0.0, metadata=GUARD_FLAG_METADATA["aux_skip_beta"])
    sdarts_epsilon: float = dataclasses.field(default=0.0, metadata=GUARD_FLAG_METADATA["sdarts_epsilon"])
    beta_decay: float = dataclasses.field(default=0.0, metadata=GUARD_FLAG_METADATA["beta_decay"])
    # architecture health and early stopping (darts_tf.health, darts_tf.early_stop: run_bilevel_search reads them)
    hessian_eigenvalue: bool = monitor_field("hessian_eigenvalue")
    hessian_iterations: int = monitor_field("hessian_iterations")
    early_stop: str = monitor_field("early_stop")
    es_max_skip_connects: int = monitor_field("es_max_skip_connects")
    es_stable_epochs: int = monitor_field("es_stable_epochs")
    es_ratio: float = monitor_field("es_ratio")
    es_window: int = monitor_field("es_window")
    es_lag: int = monitor_field("es_lag")
    es_start_epoch: int = monitor_field("es_start_epoch")
    cutout: bool = False
    cutout_length: int = 16
    jit_compile: bool = False
    strategy: str = dataclasses.field(default="default", metadata=SEARCH_STRATEGY_METADATA)
    mixed_precision: bool = False
    deterministic: bool = False
    resume: bool = False

    def validate(self) -> "SearchConfig":
        if not self.output_dir:
            raise ValueError("output_dir is required: the directory for the genotype, alphas, logs and checkpoints.")
        self.bilevel_config()
        self.guards_config()
        check_strategy_name(self.strategy)
        check_monitor_flags(self.to_dict())
        positive = {"batch_size": self.batch_size, "epochs": self.epochs, "init_channels": self.init_channels,
                    "layers": self.layers}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name} must be >= 1. Received: {name}={value}")
        if self.search_space not in SEARCH_SPACES:
            raise ValueError(f"--search_space must be one of {', '.join(SEARCH_SPACES)}. "
                             f"Received: search_space={self.search_space!r}")
        if self.search_space == "nb201":
            self.check_nb201()
        elif self.nb201_benchmark:
            raise ValueError(f"--nb201_benchmark looks NAS-Bench-201 cells up: it needs --search_space=nb201. "
                             f"Received: search_space={self.search_space!r}, nb201_benchmark={self.nb201_benchmark!r}")
        elif self.layers < 3:
            raise ValueError(f"--layers must be >= 3 (reduction cells sit at 1/3 and 2/3 of the depth). Received: layers={self.layers}")
        if self.image_size < 0 or (self.crop_padding is not None and self.crop_padding < 0):
            name = "image_size" if self.image_size < 0 else "crop_padding"
            raise ValueError(f"--{name} must be >= 0. Received: {name}={getattr(self, name)}")
        if self.nodes < 1:
            raise ValueError(f"--nodes must be >= 1. Received: nodes={self.nodes}")
        gt.parse_primitives(self.primitives, gt.CNN_PRIMITIVES)
        check_partial_channels(self.partial_channels, self.init_channels, flags=True)
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

    def check_nb201(self) -> None:
        """--search_space=nb201 refuses the flags of the DARTS cell space: its cell, ops and skeleton are fixed, and
        the collapse guards that act inside DARTS' mixed ops or on its normal cell have nothing to act on."""
        defaults = SearchConfig()
        fixed = {"nodes": "its cell has 4 nodes (6 edges)",
                 "primitives": f"its ops are {', '.join(gt.NB201_PRIMITIVES)}",
                 "partial_channels": "PC-DARTS' partial channels are a DARTS-space option",
                 "edge_normalization": "PC-DARTS' edge normalisation is a DARTS-space option",
                 "skip_dropout": "its supernet has no mixed-op skip connection to drop",
                 "aux_skip_beta": "its supernet has no DARTS- auxiliary skip",
                 "max_skip_connects": "it keeps every edge's top-1 op (no skip_connect cap)"}
        for name, why in fixed.items():
            if getattr(self, name) != getattr(defaults, name):
                raise ValueError(f"--{name} does not apply to --search_space=nb201 ({why}); drop the flag. "
                                 f"Received: {name}={getattr(self, name)!r}")
        if self.nb201_benchmark:
            from darts_tf.cnn.nb201_lookup import check_benchmark

            check_benchmark(self.nb201_benchmark, self.nb201_dataset)

    def bilevel_config(self) -> BilevelConfig:
        """The search step's settings (the reference's CNN architect: no clip of the virtual step)."""
        return BilevelConfig(mode=self.arch_mode, xi=self.xi, weight_decay=self.weight_decay,
                             arch_weight_decay=self.arch_weight_decay, grad_clip=self.grad_clip,
                             exact_recompute=self.exact_recompute, exact_hvp=self.exact_hvp)

    def guards_config(self) -> CollapseGuards:
        """The search's collapse guards (validated by ``CollapseGuards``)."""
        return CollapseGuards(skip_dropout=self.skip_dropout, max_skip_connects=self.max_skip_connects,
                              aux_skip_beta=self.aux_skip_beta, sdarts_epsilon=self.sdarts_epsilon,
                              beta_decay=self.beta_decay)

    @property
    def primitive_list(self):
        return gt.parse_primitives(self.primitives, gt.CNN_PRIMITIVES)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def build_search_model(config: SearchConfig, input_shape, num_classes: int, steps_per_epoch: int):
    """The compiled supernet with the paper's optimisers (SGD + cosine for w, Adam for alpha)."""
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if config.search_space == "nb201":
        from darts_tf.cnn.nb201 import build_nb201_search_network

        model = build_nb201_search_network(input_shape, num_classes, C=config.init_channels, N=config.layers,
                                           bilevel=config.bilevel_config(), guards=config.guards_config())
        return compile_search_model(model, config, steps_per_epoch)
    model = build_cnn_search_network(input_shape, num_classes, C=config.init_channels, num_layers=config.layers,
                                     steps=config.nodes, multiplier=config.nodes, primitives=config.primitive_list,
                                     bilevel=config.bilevel_config(), guards=config.guards_config(),
                                     partial_channels=config.partial_channels,
                                     edge_normalization=config.edge_normalization)
    return compile_search_model(model, config, steps_per_epoch)


def compile_search_model(model, config, steps_per_epoch: int, beta_1: float = 0.5):
    from darts_tf.optim import MomentumSGD
    from darts_tf.schedules import EpochCosineDecay

    lr = EpochCosineDecay(config.learning_rate, config.epochs, steps_per_epoch, config.learning_rate_min)
    model.compile(optimizer=MomentumSGD(lr, momentum=config.momentum),  # Keras' SGD, one op per variable
                  arch_optimizer=keras.optimizers.Adam(config.arch_learning_rate, beta_1=beta_1, beta_2=0.999),
                  jit_compile=config.jit_compile)
    return model


def run_search(config: SearchConfig, callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                   data=None, extra_flags: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """DARTS on an image dataset: returns the final genotype and metrics, writes the search files of ``darts_tf.run_files.RunFiles``.

    `data` (an ``images.ImageData``) is used instead of loading ``config.dataset`` when given (the pipeline's
    ingested copy); `extra_flags` are recorded with the run's flags (e.g. the dataset hash).
    """
    from darts_tf.data import images

    config.validate()
    strategy = make_strategy(config.strategy)  # before TensorFlow's first op (multi-worker collectives)
    check_replica_batch(config.batch_size, strategy.num_replicas_in_sync)
    check_output_dir(config.output_dir)
    checkpoint.start_run(config.seed, config.deterministic)
    if data is None:
        logging.info("Loading the dataset %s ...", config.dataset)
        data = images.load_image_data(config.dataset, config.data_dir, download=config.download,
                                      image_size=config.image_size)
    augment = default_augmentation(data.name, data.image_shape, config.flip, config.crop_padding,
                                   config.cutout_length if config.cutout else 0)

    def stream(initial_epoch):
        return images.search_dataset(data.train_images, data.train_labels, config.batch_size, config.train_portion,
                                     seed=config.seed, initial_epoch=initial_epoch, epochs=config.epochs,
                                     augment=augment, mean=data.mean, std=data.std)

    lookups = []  # the NAS-Bench-201 lookup of each epoch's cell (opened before the first step: a bad file fails now)
    if config.nb201_benchmark:
        from darts_tf.cnn.nb201_lookup import NB201Lookup

        lookups.append(NB201Lookup.from_path(config.nb201_benchmark, config.nb201_dataset))
    _, steps = stream(0)
    logging.info("Building the search network (%s, %d %s, C=%d, every candidate operation on every edge) ...",
                 config.search_space, config.layers, "cells per stage" if config.search_space == "nb201" else "cells",
                 config.init_channels)
    with strategy.scope():  # the variables mirrored on every replica, fit's steps run on each
        model = build_search_model(config, data.image_shape, data.num_classes, steps)
    fix_keras_multi_worker(model)  # no-op but under multi_worker
    logging.info("CNN search: %s, %d train images, %d steps/epoch, mode %s, %d replica(s)", data.name,
                 len(data.train_images), steps, config.arch_mode, strategy.num_replicas_in_sync)
    if model.guards.any_on:
        callbacks = [CollapseSchedule(config.epochs), *callbacks]  # the guards' per-epoch values
    # multi_worker: the chief writes --output_dir, every other worker a temporary directory of its own
    return run_on_workers(strategy, config.output_dir, config.resume, lambda write_dir: run_bilevel_search(
        model, lambda e: stream(e)[0], steps, config.epochs, write_dir, {**config.to_dict(), **(extra_flags or {})},
        config.resume, callbacks, verbose, log_callbacks=lookups))


# Named search settings (``--preset`` of darts-search): `darts` is the paper's (every guard off, the default);
# `robust` turns on every collapse guard of darts_tf.collapse with the values of collapse.ROBUST.
SEARCH_PRESETS = Presets("search")
register_search_preset = SEARCH_PRESETS.register
get_search_preset = SEARCH_PRESETS.config  # the flags given on the command line replace the preset's values


register_search_preset("darts", SearchConfig())
register_search_preset("robust", SearchConfig(**ROBUST))
# DARTS on NAS-Bench-201 as its authors ran it (AutoDL-Projects configs/nas-benchmark/algos/DARTS.config and
# scripts-search/algos/DARTS-V1.sh): C=16, N=5, 50 epochs of batch 64, SGD lr 0.025 cosine to 0.001, momentum 0.9,
# weight decay 5e-4, clip 5; Adam(3e-4, betas 0.5, 0.999) for alpha with weight decay 1e-3. Their SGD is Nesterov's;
# ours is heavy-ball momentum, the form the unrolled step of the second-order modes assumes (darts_tf.bilevel).
register_search_preset("nb201", SearchConfig(search_space="nb201", init_channels=16, layers=5, batch_size=64,
                                             epochs=50, learning_rate=0.025, learning_rate_min=0.001, momentum=0.9,
                                             weight_decay=5e-4, grad_clip=5.0, arch_learning_rate=3e-4,
                                             arch_weight_decay=1e-3))
