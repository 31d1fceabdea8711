"""The search loop shared by every task family: a compiled ``BilevelSearchModel`` fitted on a ``{'train',
'validation'}`` stream, with per-epoch genotypes, alpha history, metrics, TensorBoard and checkpoint/resume
(``run_bilevel_search``), and the random-search baseline (``run_random_search``). The CNN and RNN searches
(``darts_tf.cnn.search``, ``darts_tf.rnn.search``) build their data and supernet and call it.

Output directory layout (``darts_tf.run_files.RunFiles`` names every file)::

    run_config.json        the flags of the run (a resume with other flags is refused)
    training_state.npz     weights, alphas, both optimiser states, RNG states, epochs done (every epoch)
    genotype.json          the genotype derived from the final alphas (with lineage metadata)    finished search
    genotypes/epoch_NNN.json  the genotype after every epoch
    alphas.npz             final alphas by name                                                  finished search
    alpha_history.npz      [epochs, edges, ops] per name, after every epoch (what an unfinished search derives from)
    metrics.json           per-epoch history (loss, val_loss, accuracies, lr) and the final values
    tensorboard/           Keras scalars (train/, validation/) and architecture/ (alpha heatmaps, genotype text)

A run whose loss or alphas become NaN/inf stops at once (``guards.NonFiniteGuard``, ahead of every writer): the
checkpoint of the epoch before is kept, and no genotype, alphas or metrics are written from the bad values.
``load_search_alphas`` is the reader: the alphas a genotype is derived from, of a finished or an unfinished search.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf.guards import SEARCH_RATE_FLAGS, FirstStepNotice, NonFiniteGuard, check_finite
from darts_tf.io_utils import atomic_savez, check_output_dir, DamagedFileError, load_json, load_npz, write_json
from darts_tf.run_files import RunFiles


_RERUN = "delete it and the run's training_state.npz to start the search over, or restore a copy"
_DIVERGED = (f"The search diverged; no genotype is derived from them. Run it again with a lower "
             f"{' or '.join(reversed(SEARCH_RATE_FLAGS))}.")


def alpha_heatmap(weights: np.ndarray, cell: int = 8) -> np.ndarray:
    """softmax(alpha) [edges, ops] as a [1, edges*cell, ops*cell, 1] image for TensorBoard (1 = white)."""
    img = np.kron(np.asarray(weights, np.float32), np.ones((cell, cell), np.float32))
    return img[None, :, :, None]


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _metrics_history(outputs: RunFiles) -> List[Dict[str, float]]:
    """The per-epoch metrics that a resumed search continues (metrics.json's "history")."""
    fix = f"{_RERUN} of {outputs.metrics}."
    metrics = load_json(outputs.metrics, "metrics file", fix)
    history = metrics.get("history") if isinstance(metrics, dict) else None
    if not isinstance(history, list):
        raise DamagedFileError(f"{outputs.metrics} is damaged (no per-epoch \"history\" list): {fix}")
    return history


class ArchitectureLogger(keras.callbacks.Callback):
    """After every epoch: the derived genotype (JSON + TensorBoard text), the alphas (history file +
    softmax heatmaps), and the epoch's metrics. The model must provide ``genotype()`` and ``alphas_numpy()``."""

    def __init__(self, outputs: RunFiles, lineage: Dict[str, Any], initial_epoch: int = 0):
        super().__init__()
        self.outputs, self.lineage = outputs, lineage
        self.writer = tf.summary.create_file_writer(os.path.join(outputs.tensorboard, "architecture"))
        self.history: Dict[str, List[np.ndarray]] = {}
        self.metrics_history: List[Dict[str, float]] = []
        if initial_epoch and os.path.isfile(outputs.alpha_history):
            data = load_npz(outputs.alpha_history, "alpha history", _RERUN)
            self.history = {k: list(v[:initial_epoch]) for k, v in data.items()}
        if initial_epoch and os.path.isfile(outputs.metrics):
            self.metrics_history = _metrics_history(outputs)[:initial_epoch]

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
    Writes the search files of ``RunFiles``; returns {'genotype', 'genotype_path', 'metrics', 'output_dir'}.
    """
    outputs = RunFiles(output_dir)
    check_output_dir(output_dir, checkpoint.state_size_bytes(model))
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
                  verbose=verbose, shuffle=False, callbacks=[  # the stream is shuffled; shuffle=True would warn
                      NonFiniteGuard(SEARCH_RATE_FLAGS, outputs.state),  # first: a bad epoch writes nothing
                      FirstStepNotice(),
                      keras.callbacks.TensorBoard(outputs.tensorboard, update_freq="epoch", write_graph=False),
                      logger, checkpoint.EpochCheckpoint(output_dir), *callbacks])
        history = logger.metrics_history
    else:
        history = _metrics_history(outputs) if os.path.isfile(outputs.metrics) else []
    epochs_done = history[-1]["epoch"] if history else initial_epoch
    alphas = model.alphas_numpy()
    check_finite(alphas, f"The alphas of {output_dir} after epoch {epochs_done}", _DIVERGED)
    genotype = model.genotype()
    metrics = {"history": history, "final": history[-1] if history else {}, "epochs_done": epochs_done,
               "wall_time_s": time.time() - start}
    write_json(outputs.metrics, metrics)
    if epochs_done >= epochs:  # only a finished search publishes its final alphas and genotype
        atomic_savez(outputs.alphas, alphas)
        gt.save_genotype(genotype, outputs.genotype, {**lineage, "epoch": epochs_done})
    return {"genotype": genotype, "genotype_path": outputs.genotype, "metrics": metrics, "output_dir": output_dir,
            "alphas": alphas}


@dataclasses.dataclass(frozen=True)
class SearchAlphas:
    """The alphas a search directory's genotype is derived from, and where they come from."""

    alphas: Dict[str, np.ndarray]
    finished: bool  # True: the final alphas (alphas.npz); False: an unfinished search's last epoch (alpha_history.npz)
    epoch: Optional[int]  # the epochs finished when they were taken (None: not recorded)
    epochs: Optional[int]  # the epochs the search was run for (run_config.json), if known
    source: str  # the file read
    primitives: Optional[List[str]]  # the candidate ops of the search (None: the default space)


def load_search_alphas(search_dir: str) -> SearchAlphas:
    """The final alphas of a finished search (``alphas.npz``), else those after the last finished epoch of a stopped
    or killed one (the last row of ``alpha_history.npz``). Damaged files and non-finite alphas are refused."""
    files = RunFiles(search_dir)
    config: Dict[str, Any] = {}
    if os.path.isfile(files.run_config):
        config = load_json(files.run_config, "run config", f"restore a copy of {files.run_config}, or derive from "
                           f"{files.alphas} with --primitives given explicitly.")
    epochs = config.get("epochs")
    primitives = [p.strip() for p in config["primitives"].split(",") if p.strip()] if "primitives" in config else None
    if os.path.isfile(files.alphas):
        alphas = load_npz(files.alphas, "alpha file", f"run the search again, or restore a copy of {files.alphas}.")
        found = SearchAlphas(alphas, True, epochs, epochs, files.alphas, primitives)
    elif os.path.isfile(files.alpha_history):
        history = load_npz(files.alpha_history, "alpha history", _RERUN + ".")
        done = min((len(v) for v in history.values()), default=0)
        if not done:
            raise ValueError(f"{files.alpha_history} holds no finished epoch: nothing to derive a genotype from.")
        found = SearchAlphas({k: v[done - 1] for k, v in history.items()}, False, done, epochs, files.alpha_history,
                             primitives)
    else:
        raise FileNotFoundError(f"{files.alphas} does not exist, nor {files.alpha_history}: --search_dir must be a "
                                f"darts-search or darts-rnn-search output directory with at least one finished epoch.")
    check_finite(found.alphas, f"The alphas in {found.source}", _DIVERGED)
    return found


def run_random_search(output_dir: str, kind: str = "cnn", num_samples: int = 8, seed: int = 0) -> Dict[str, Any]:
    """The random-search baseline: genotypes sampled uniformly from the same space, in the search's format
    (``genotypes/sample_NNN.json`` for every sample; ``genotype.json`` is sample 0 — pick the best with `select`)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1. Received: {num_samples}")
    check_output_dir(output_dir)
    outputs = RunFiles(output_dir)
    paths = []
    for i in range(num_samples):
        genotype = gt.random_genotype(seed * 100003 + i, kind)
        path = outputs.sample_genotype(i)
        gt.save_genotype(genotype, path, {"stage": "random_search", "seed": seed, "sample": i, "kind": kind})
        paths.append(path)
    first = gt.load_genotype_file(paths[0])
    gt.save_genotype(first, outputs.genotype, {"stage": "random_search", "seed": seed, "sample": 0, "kind": kind})
    write_json(outputs.metrics, {"random_search": True, "num_samples": num_samples, "samples": paths})
    return {"genotype": first, "genotype_path": outputs.genotype, "samples": paths, "output_dir": output_dir}
