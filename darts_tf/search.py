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
    metrics.json           per-epoch history (loss, val_loss, accuracies, lr, the ``darts_tf.health`` keys) and the
                           final values (those of the published epoch; ``early_stop``: which epoch and why)
    tensorboard/           Keras scalars (train/, validation/), architecture/ (``darts_tf.summaries``' views) and
                           hparams/ (the run's HParams session); every step is the 0-based epoch index

With ``--early_stop`` (``darts_tf.early_stop``) a search that stops early publishes the genotype and alphas of the
epoch its rule keeps (genotype.json, alphas.npz, metrics.json "final"); its checkpoint stays that of the last epoch,
and a resume replays the rule on metrics.json's history (and does not train on).

A run whose loss or alphas become NaN/inf stops at once (``guards.NonFiniteGuard``, ahead of every writer): the
checkpoint of the epoch before is kept, and no genotype, alphas or metrics are written from the bad values.
``load_search_alphas`` is the reader: the alphas a genotype is derived from, of a finished or an unfinished search.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf import checkpoint, distribute, io_utils
from darts_tf import genotypes as gt
from darts_tf import health as hl
from darts_tf import summaries
from darts_tf.early_stop import EarlyStopConfig, EarlyStopping, StopDecision, first_stop
from darts_tf.guards import SEARCH_RATE_FLAGS, FirstStepNotice, NonFiniteGuard, check_finite
from darts_tf.io_utils import atomic_savez, check_output_dir, DamagedFileError, load_json, load_npz, write_json
from darts_tf.run_files import RunFiles


_RERUN = "delete it and the run's training_state.npz to start the search over, or restore a copy"
_DIVERGED = (f"The search diverged; no genotype is derived from them. Run it again with a lower "
             f"{' or '.join(reversed(SEARCH_RATE_FLAGS))}.")


# The search flags that are the columns of its HParams session (tensorboard/hparams/): what tells seeds and modes apart
HPARAM_KEYS = ("seed", "dataset", "arch_mode", "epochs", "learning_rate", "arch_learning_rate", "arch_weight_decay",
               "skip_dropout", "max_skip_connects", "aux_skip_beta", "sdarts_epsilon", "beta_decay", "early_stop",
               "hessian_eigenvalue", "search_space")


def _metrics_history(outputs: RunFiles) -> List[Dict[str, float]]:
    """The per-epoch metrics that a resumed search continues (metrics.json's "history")."""
    fix = f"{_RERUN} of {outputs.metrics}."
    metrics = load_json(outputs.metrics, "metrics file", fix)
    history = metrics.get("history") if isinstance(metrics, dict) else None
    if not isinstance(history, list):
        raise DamagedFileError(f"{outputs.metrics} is damaged (no per-epoch \"history\" list): {fix}")
    return history


class ArchitectureLogger(keras.callbacks.Callback):
    """After every epoch: the derived genotype (JSON file), the alphas (history file), the epoch's metrics and the
    architecture's health (``darts_tf.health``; with `eigenvalue`, the dominant Hessian eigenvalue too) into
    metrics.json, and the TensorBoard views of ``darts_tf.summaries`` at Keras' step (the 0-based epoch index).
    The model must provide ``genotype()`` and ``alphas_numpy()`` (and may name its ops in ``primitives``)."""

    def __init__(self, outputs: RunFiles, lineage: Dict[str, Any], initial_epoch: int = 0,
                 eigenvalue: Optional[hl.HessianEigenvalue] = None):
        super().__init__()
        self.outputs, self.lineage = outputs, lineage
        self.initial_epoch, self.eigenvalue = initial_epoch, eigenvalue
        self.previous_genotype: Optional[gt.AnyGenotype] = None
        self.writer = tf.summary.create_file_writer(os.path.join(outputs.tensorboard, "architecture"))
        self.history: Dict[str, List[np.ndarray]] = {}
        self.metrics_history: List[Dict[str, float]] = []
        if initial_epoch and io_utils.isfile(outputs.alpha_history):
            data = load_npz(outputs.alpha_history, "alpha history", _RERUN)
            self.history = {k: list(v[:initial_epoch]) for k, v in data.items()}
        if initial_epoch and io_utils.isfile(outputs.metrics):
            self.metrics_history = _metrics_history(outputs)[:initial_epoch]

    def on_train_begin(self, logs=None):
        # the genotype changes of the first epoch are counted from the initial alphas' genotype
        previous = self.outputs.epoch_genotype(self.initial_epoch) if self.initial_epoch else None
        self.previous_genotype = (gt.load_genotype_file(previous) if previous and io_utils.isfile(previous)
                                  else self.model.genotype())

    def health(self, alphas, genotype) -> hl.ArchitectureHealth:
        """The epoch's ``darts_tf.health`` values, with the eigenvalue (and its cost) when asked for."""
        health = hl.architecture_health(alphas, genotype, self.previous_genotype)
        if self.eigenvalue is not None:
            found = self.eigenvalue()
            finite = bool(np.isfinite(found.eigenvalue))
            if not finite:
                logging.warning("The dominant Hessian eigenvalue is not finite (%s); recorded as null.",
                                found.eigenvalue)
            health.scalars.update({"hessian_eigenvalue": float(found.eigenvalue) if finite else None,
                                   "hessian_iterations": float(found.iterations),
                                   "hessian_seconds": float(self.eigenvalue.last_seconds)})
        return health

    def on_epoch_end(self, epoch, logs=None):
        genotype = self.model.genotype()
        alphas = self.model.alphas_numpy()
        health = self.health(alphas, genotype)
        self.previous_genotype = genotype
        gt.save_genotype(genotype, self.outputs.epoch_genotype(epoch + 1), {**self.lineage, "epoch": epoch + 1})
        for name, value in alphas.items():
            self.history.setdefault(name, []).append(value)
        atomic_savez(self.outputs.alpha_history, {k: np.stack(v) for k, v in self.history.items()})
        self.metrics_history.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                                     **health.scalars})
        write_json(self.outputs.metrics, {"history": self.metrics_history})
        with self.writer.as_default():  # Keras' TensorBoard writes the epoch scalars at step `epoch` too
            summaries.log_alphas(alphas, getattr(self.model, "primitives", None), health, epoch, f"epoch {epoch + 1}")
            summaries.log_health({k: v for k, v in health.scalars.items() if v is not None}, epoch)
            summaries.log_genotype(genotype, epoch)
        self.writer.flush()
        logging.info("epoch %d genotype: %s", epoch + 1, genotype)

    def log_early_stop(self, decision: StopDecision) -> None:
        with self.writer.as_default():
            tf.summary.text("early_stop", f"Stopped after epoch {decision.stop_epoch} ({decision.rule}): "
                                          f"{decision.reason}. Published: epoch {decision.kept_epoch}.",
                            step=decision.stop_epoch - 1)
        self.writer.flush()


class EpochLearningRate(keras.callbacks.Callback):
    """Sets the epoch logs' `lr` (TensorBoard's epoch_lr, metrics.json) to the weights' learning rate of the epoch,
    read before its first step: the schedule's value for the epoch (CNN), the unscaled rate (RNN, whose steps scale
    it by their window length). Keras' TensorBoard would log the rate after the epoch (the next epoch's) as well."""

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self._lr


class StopAfterEpochs(keras.callbacks.Callback):
    """Stops training after `n` epochs of this call (used to simulate a killed run in tests)."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            self.model.stop_training = True


def run_on_workers(strategy: tf.distribute.Strategy, output_dir: str, resume: bool,
                   run: Callable[[str], Dict[str, Any]]) -> Dict[str, Any]:
    """``run(write_dir)``: a search in the directory this process writes. Under a multi-worker `strategy` the chief
    writes `output_dir`, every other worker a temporary directory of its own (``distribute.worker_write_dir``; seeded
    with the chief's files on a resume, so that every worker resumes from the same epoch), removed at the end; the
    result then names the chief's directory and genotype. Otherwise ``run(output_dir)``."""
    write_dir = distribute.worker_write_dir(output_dir, strategy)
    if write_dir != output_dir and resume and checkpoint.has_state(output_dir):
        io_utils.copy_tree(output_dir, write_dir)
    try:
        result = run(write_dir)
    finally:
        distribute.remove_worker_dir(write_dir, output_dir)
    if write_dir != output_dir:  # what the chief wrote
        result = {**result, "output_dir": output_dir,
                  "genotype_path": os.path.join(output_dir, os.path.relpath(result["genotype_path"], write_dir))}
    return result


def run_bilevel_search(model, dataset, steps_per_epoch: int, epochs: int, output_dir: str, config: Dict[str, Any],
                       resume: bool, callbacks: Sequence[keras.callbacks.Callback] = (), verbose="auto",
                       log_callbacks: Sequence[keras.callbacks.Callback] = (),
                       fit_dataset: Optional[Callable[[int], Any]] = None) -> Dict[str, Any]:
    """Fits a compiled `BilevelSearchModel` on a ``{'train', 'validation'}`` dataset factory.

    `callbacks` run after the search's own; `log_callbacks` add keys to the epoch logs, so they run ahead of
    TensorBoard and of metrics.json's writer (e.g. ``darts_tf.cnn.nb201_lookup.NB201Lookup``).

    `dataset` is a function ``initial_epoch -> tf.data.Dataset`` covering epochs initial_epoch..epochs-1.
    `fit_dataset`, when given, is the same stream as the caller distributed it over the replicas (a
    ``tf.distribute.DistributedDataset``: the RNN's rows per replica, ``distribute.distribute_row_streams``); fit
    trains on it, and `dataset` still gives the health probe its batch.
    Writes the search files of ``RunFiles``; returns {'genotype', 'genotype_path', 'metrics', 'output_dir', 'alphas'}.
    `config` (the run's flags) also gives the health and early-stopping settings: ``hessian_eigenvalue``,
    ``hessian_iterations`` (``darts_tf.health``), ``early_stop`` and ``es_*`` (``EarlyStopConfig.from_flags``).
    """
    outputs = RunFiles(output_dir)
    check_output_dir(output_dir, checkpoint.state_size_bytes(model))
    # a resume may change the strategy: a distributed step is the one-device step on the same global batch
    checkpoint.check_run_config(output_dir, config, resume, ignore=("resume", "epochs", "strategy"))
    initial_epoch = 0
    if resume and checkpoint.has_state(output_dir):
        initial_epoch = int(checkpoint.restore_state(output_dir, model)["epochs_done"])
        logging.info("Resuming search from %s after epoch %d", output_dir, initial_epoch)
    lineage = {"stage": "search", "output_dir": io_utils.absolute(output_dir),
               **{k: config[k] for k in ("dataset", "seed", "arch_mode") if k in config}, "flags": config}
    start = time.time()
    stopping = EarlyStopConfig.from_flags(config)
    # a search stopped early before it was resumed stays stopped: its rule is replayed on the recorded history
    restored = _metrics_history(outputs)[:initial_epoch] if initial_epoch and io_utils.isfile(outputs.metrics) else []
    decision = first_stop(stopping, restored)
    if initial_epoch < epochs and decision is None:
        logger = ArchitectureLogger(outputs, lineage, initial_epoch, _eigenvalue_monitor(model, dataset, config,
                                                                                       stopping))
        stopper = [EarlyStopping(stopping, logger.metrics_history)] if stopping.enabled else []
        model.fit((fit_dataset or dataset)(initial_epoch), epochs=epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch,
                  verbose=verbose, shuffle=False, callbacks=[  # the stream is shuffled; shuffle=True would warn
                      NonFiniteGuard(SEARCH_RATE_FLAGS, outputs.state),  # first: a bad epoch writes nothing
                      FirstStepNotice(),
                      EpochLearningRate(),  # ahead of TensorBoard: it sets the epoch's `lr`
                      *log_callbacks,
                      summaries.OneRateTensorBoard(outputs.tensorboard, update_freq="epoch", write_graph=False),
                      logger, checkpoint.EpochCheckpoint(output_dir), *stopper, *callbacks])
        history = logger.metrics_history
        decision = stopper[0].decision if stopper else None
        if decision is not None:
            logger.log_early_stop(decision)
    else:
        history = restored if decision else _metrics_history(outputs) if io_utils.isfile(outputs.metrics) else []
    epochs_done = history[-1]["epoch"] if history else initial_epoch
    kept = decision.kept_epoch if decision else epochs_done
    if decision:  # the kept epoch's alphas and the genotype derived from them then
        alphas = {k: v[kept - 1] for k, v in load_npz(outputs.alpha_history, "alpha history", _RERUN + ".").items()}
        genotype = gt.load_genotype_file(outputs.epoch_genotype(kept))
    else:
        alphas, genotype = model.alphas_numpy(), model.genotype()
    check_finite(alphas, f"The alphas of {output_dir} after epoch {kept}", _DIVERGED)
    final = next((h for h in history if h.get("epoch") == kept), history[-1] if history else {})
    metrics = {"history": history, "final": final, "epochs_done": epochs_done, "wall_time_s": time.time() - start}
    if stopping.enabled:
        metrics["early_stop"] = {"rule": stopping.rule, "stopped": decision is not None,
                                 **(decision.to_dict() if decision else {})}
    write_json(outputs.metrics, metrics)
    if epochs_done >= epochs or decision:  # only a finished search publishes its alphas and genotype
        atomic_savez(outputs.alphas, alphas)
        gt.save_genotype(genotype, outputs.genotype, {**lineage, "epoch": kept,
                                                      **({"early_stop": decision.to_dict()} if decision else {})})
        _write_hparams(outputs, config, final, kept)
    return {"genotype": genotype, "genotype_path": outputs.genotype, "metrics": metrics, "output_dir": output_dir,
            "alphas": alphas}


def _eigenvalue_monitor(model, dataset, config: Dict[str, Any],
                        stopping: EarlyStopConfig) -> Optional[hl.HessianEigenvalue]:
    """The dominant-eigenvalue probe when --hessian_eigenvalue (or robust_darts) asks for it: on the first validation
    batch of the stream from epoch 0 (the same batch every epoch, and after a resume)."""
    if not (config.get("hessian_eigenvalue") or stopping.needs_eigenvalue):
        return None
    batch = model._split(next(iter(dataset(0).take(1))))[1]
    return hl.HessianEigenvalue(model, batch, iterations=int(config.get("hessian_iterations") or 20),
                                seed=int(config.get("seed") or 0))


def _write_hparams(outputs: RunFiles, config: Dict[str, Any], final: Dict[str, Any], kept: int) -> None:
    """The search's HParams session (tensorboard/hparams/): `HPARAM_KEYS` of its flags -> the published epoch's
    metrics (final/val_accuracy, final/val_loss, ...). Written once, when the search publishes its genotype."""
    logdir = os.path.join(outputs.tensorboard, "hparams")
    if io_utils.isdir(logdir):
        return
    names = ("val_accuracy", "val_loss", "accuracy", "loss")
    summaries.write_hparams(logdir, {k: config[k] for k in HPARAM_KEYS if k in config},
                            {**{f"final/{k}": final.get(k) for k in names if k in final}, "final/epoch": kept},
                            step=max(kept - 1, 0))


@dataclasses.dataclass(frozen=True)
class SearchAlphas:
    """The alphas a search directory's genotype is derived from, and where they come from."""

    alphas: Dict[str, np.ndarray]
    finished: bool  # True: the final alphas (alphas.npz); False: an unfinished search's last epoch (alpha_history.npz)
    epoch: Optional[int]  # the epochs finished when they were taken (None: not recorded)
    epochs: Optional[int]  # the epochs the search was run for (run_config.json), if known
    source: str  # the file read
    primitives: Optional[List[str]]  # the candidate ops of the search (None: the default space)


def _published_epoch(files: RunFiles, epochs: Optional[int]) -> Optional[int]:
    """The epoch whose alphas a finished search published (genotype.json's; an early-stopped search's is earlier
    than its run's `epochs`)."""
    try:
        return gt.load_genotype_metadata(files.genotype).get("epoch", epochs) if io_utils.isfile(files.genotype) \
            else epochs
    except (OSError, ValueError, AttributeError):  # a damaged genotype.json: the alphas are what is read here
        return epochs


def load_search_alphas(search_dir: str) -> SearchAlphas:
    """The final alphas of a finished search (``alphas.npz``), else those after the last finished epoch of a stopped
    or killed one (the last row of ``alpha_history.npz``). Damaged files and non-finite alphas are refused."""
    files = RunFiles(search_dir)
    config: Dict[str, Any] = {}
    if io_utils.isfile(files.run_config):
        config = load_json(files.run_config, "run config", f"restore a copy of {files.run_config}, or derive from "
                           f"{files.alphas} with --primitives given explicitly.")
    epochs = config.get("epochs")
    primitives = [p.strip() for p in config["primitives"].split(",") if p.strip()] if "primitives" in config else None
    if config.get("search_space") == "nb201":  # NAS-Bench-201's ops (its --primitives is the unused DARTS default)
        primitives = list(gt.NB201_PRIMITIVES)
    if io_utils.isfile(files.alphas):
        alphas = load_npz(files.alphas, "alpha file", f"run the search again, or restore a copy of {files.alphas}.")
        found = SearchAlphas(alphas, True, _published_epoch(files, epochs), epochs, files.alphas, primitives)
    elif io_utils.isfile(files.alpha_history):
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


def run_random_search(output_dir: str, kind: str = "cnn", num_samples: int = 8, seed: int = 0,
                      primitives: Optional[Sequence[str]] = None, steps: Optional[int] = None) -> Dict[str, Any]:
    """The random-search baseline: genotypes sampled uniformly from the same space (`steps` nodes, `primitives`;
    default the family's), in the search's format (``genotypes/sample_NNN.json`` for every sample; ``genotype.json``
    is sample 0 — pick the best with `select`)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1. Received: {num_samples}")
    check_output_dir(output_dir)
    outputs = RunFiles(output_dir)
    paths = []
    for i in range(num_samples):
        genotype = gt.random_genotype(seed * 100003 + i, kind, steps, primitives)
        path = outputs.sample_genotype(i)
        gt.save_genotype(genotype, path, {"stage": "random_search", "seed": seed, "sample": i, "kind": kind})
        paths.append(path)
    first = gt.load_genotype_file(paths[0])
    gt.save_genotype(first, outputs.genotype, {"stage": "random_search", "seed": seed, "sample": 0, "kind": kind})
    write_json(outputs.metrics, {"random_search": True, "num_samples": num_samples, "samples": paths})
    return {"genotype": first, "genotype_path": outputs.genotype, "samples": paths, "output_dir": output_dir}
