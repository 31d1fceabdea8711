"""Training the derived recurrent cell (paper A.2.2 / A.2.4, reference ``rnn/train.py``).

SGD lr 20 without momentum, gradient clip 0.25, weight decay added to the gradient, one step per BPTT window with
the step scaled by seq_len / bptt (``RNNModel.train_step``); after each epoch the validation perplexity with fixed
windows decides, by awd-lstm-lm's non-monotone trigger, when to switch to averaged SGD (Polyak & Juditsky 1992);
from then on validation and the best-model file use the average of the iterates. Training runs in ``model.fit``, so
Keras callbacks (TensorBoard, ...) work; the whole state (weights, optimizer with its ASGD averages, seed-generator
states, epoch, validation history) is written atomically every epoch by ``darts_tf.checkpoint`` and a killed run
resumes from it.

``train(config, output_dir, data_dir)`` is the whole run: it writes the run directory (``darts_tf.run_files``)::

    run_config.json      preset, data_dir and every TrainConfig field (a resume with other flags is refused)
    training_state.npz   the whole training state every epoch (darts_tf.checkpoint; --resume continues it)
    best.weights.h5      the weights with the best validation perplexity so far (ASGD averages once switched)
    model.keras          the final model: the best weights, reloadable with keras.models.load_model
    vocab.txt            the corpus vocabulary (token id = line number; max_vocab / strict_vocab: darts_tf.data.text)
    genotype.json        the cell
    metrics.json         valid/test perplexity of model.keras, per-epoch history, parameters, wall time, and
                         ``corpus``: the vocabulary record (``Corpus.stats``: how many tokens became <unk> per split)
    tensorboard/         per-epoch loss / val_loss / val_ppl / asgd
    saved_model/1/       with export=True: darts_tf.rnn.export's SavedModel (text or token ids -> next-token log-probs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf import distribute
from darts_tf.bilevel import TRAIN, check_replica_batch
from darts_tf.data.text import SMOKE, batchify, check_max_vocab, describe_stats, lm_dataset, load_corpus
from darts_tf.distribute import check_strategy_name, make_strategy
from darts_tf.guards import FirstStepNotice, NonFiniteGuard
from darts_tf import io_utils
from darts_tf.io_utils import check_output_dir, save_model_atomic, save_weights_atomic, write_json
from darts_tf.rnn.evaluate import corpus_perplexities, evaluate_loss
from darts_tf.rnn.networks import RNNModel
from darts_tf.presets import Presets
from darts_tf.run_files import RunFiles


# ----------------------------------------------------------------------------------------------- presets
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The evaluation run's settings; defaults are PTB (paper A.2.2, reference train.py with dropoute 0.1)."""

    units: int = 850  # embedding = hidden size
    genotype: str = "DARTS_V2"
    learning_rate: float = 20.0
    grad_clip: float = 0.25
    weight_decay: float = 8e-7
    batch_size: int = 64
    eval_batch_size: int = 10
    test_batch_size: int = 1
    bptt: int = 35
    max_seq_len_delta: int = 20
    epochs: int = 8000  # "until convergence": the reference's upper limit
    nonmono: int = 5
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.1
    tar_beta: float = 1e-3
    seed: int = 1267
    max_vocab: int = 0  # 0: every train word; N: the N most frequent (<eos>, <unk> included), the rest -> <unk>
    strict_vocab: bool = False  # refuse a valid/test word outside a vocabulary without <unk> (else it becomes <unk>)
    # 'auto' (MirroredStrategy when > 1 GPU), 'mirrored', 'multi_worker' (TF_CONFIG; darts_tf.distribute), 'default';
    # batch_size is the global batch, split over every replica of every worker (each carries the rows of its share)
    strategy: str = "auto"

    def __post_init__(self):
        check_max_vocab(self.max_vocab)
        check_strategy_name(self.strategy)
        for name in ("units", "batch_size", "eval_batch_size", "test_batch_size", "bptt", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if self.nonmono < 0 or self.max_seq_len_delta < 0:
            raise ValueError(f"nonmono and max_seq_len_delta must be >= 0. Received: nonmono={self.nonmono}, "
                             f"max_seq_len_delta={self.max_seq_len_delta}")


RNN_PRESETS = Presets("RNN")
register_preset = RNN_PRESETS.register
get_preset = RNN_PRESETS.config


register_preset("ptb", TrainConfig())
register_preset("wikitext2", TrainConfig(units=700, weight_decay=5e-7, dropouth=0.15))  # paper A.2.4
register_preset("smoke", TrainConfig(units=64, batch_size=16, eval_batch_size=10, test_batch_size=10, bptt=20,
                                        max_seq_len_delta=10, epochs=2, dropout=0.2, dropouth=0.1, dropoutx=0.2,
                                        dropouti=0.1, dropoute=0.0))


def build_model(config: TrainConfig, vocab_size: int) -> RNNModel:
    return RNNModel(vocab_size, units=config.units, genotype=config.genotype, dropout=config.dropout,
                    dropouth=config.dropouth, dropoutx=config.dropoutx, dropouti=config.dropouti,
                    dropoute=config.dropoute, seed=config.seed)


def compile_model(model: RNNModel, config: TrainConfig, jit_compile: Any = False) -> RNNModel:
    model.compile(optimizer=AveragedSGD(config.learning_rate), grad_clip=config.grad_clip,
                  weight_decay=config.weight_decay, bptt=config.bptt, tar_beta=config.tar_beta,
                  jit_compile=jit_compile)
    return model


# ----------------------------------------------------------------------------------------------- ASGD
@keras.saving.register_keras_serializable(package="darts_tf")
class AveragedSGD(keras.optimizers.SGD):
    """Plain SGD that, after ``start_averaging()``, also keeps the running mean of its iterates.

    Equivalent to the reference's switch to ``torch.optim.ASGD(t0=0, lambd=0)``: the weights follow SGD, and
    ``average = mean(w_1, ..., w_n)`` over the n steps since the switch. The averages, the switch flag and n are
    optimizer variables, so they are checkpointed with it. Evaluate with ``averaged_weights(model, optimizer)``.
    """

    def __init__(self, learning_rate=20.0, name="averaged_sgd", **kwargs):
        kwargs.pop("momentum", None)
        kwargs.pop("nesterov", None)
        super().__init__(learning_rate=learning_rate, momentum=0.0, nesterov=False, name=name, **kwargs)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.averages = [self.add_variable_from_reference(v, name="iterate_average") for v in variables]
        self.averaging = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="averaging")
        self.average_count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="average_count")

    @property
    def is_averaging(self) -> bool:
        return self.built and bool(keras.ops.convert_to_numpy(self.averaging.value) > 0)

    def start_averaging(self) -> None:
        """Switch to ASGD: the average restarts from the next iterate."""
        self.averaging.assign(1.0)
        self.average_count.assign(0.0)

    takes_active = True  # darts_tf.optim.apply_weight_step: apply(..., active=) under a distribution strategy

    def apply(self, grads, trainable_variables=None, active=None):
        """SGD's step, then the averages; `active` False (a boolean tensor): a step that does not count (zero
        gradients applied on an empty window under a distribution strategy), the averages stay as they are."""
        super().apply(grads, trainable_variables)
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        on = tf.cast(self.averaging.value, tf.float32)
        if active is not None:
            on = on * tf.cast(active, tf.float32)
        count = self.average_count.value + on
        step = on / tf.maximum(count, 1.0)
        for v in variables:
            avg = self.averages[self._get_variable_index(v)]
            avg.assign(avg.value + tf.cast(step, avg.dtype) * (v.value - avg.value))
        self.average_count.assign(count)

    def average_of(self, variable):
        return self.averages[self._get_variable_index(variable)]


@contextlib.contextmanager
def averaged_weights(model: keras.Model, optimizer: Optional[AveragedSGD] = None) -> Iterator[bool]:
    """Temporarily swaps the ASGD averages into the model's trainable weights (no-op before the switch).

    Yields whether the averages are in use; the SGD iterates are restored on exit.
    """
    optimizer = optimizer or model.optimizer
    if not isinstance(optimizer, AveragedSGD) or not optimizer.is_averaging:
        yield False
        return
    variables = model.trainable_variables
    saved = [v.numpy() for v in variables]
    try:
        for v in variables:
            v.assign(optimizer.average_of(v).value)
        yield True
    finally:
        for v, value in zip(variables, saved):
            v.assign(value)


def should_switch_to_asgd(val_losses: Sequence[float], nonmono: int = 5) -> bool:
    """awd-lstm-lm's non-monotone trigger; ``val_losses`` are the SGD epochs' losses, the current one last.

    Switch when there are more than ``nonmono`` earlier epochs and the current loss is worse than the best of
    those that lie more than ``nonmono`` epochs back: ``len(prev) > nonmono and cur > min(prev[:-nonmono])``.
    """
    if nonmono < 0:
        raise ValueError(f"nonmono must be >= 0. Received: nonmono={nonmono}")
    if not val_losses:
        return False
    previous, current = list(val_losses[:-1]), val_losses[-1]
    if len(previous) <= nonmono:
        return False
    old = previous[:-nonmono] if nonmono else previous
    return current > min(old)


# ----------------------------------------------------------------------------------------------- training
class ValidationAndASGD(keras.callbacks.Callback):
    """After every epoch: validation loss (with the averages once ASGD is on), best-model weights, ASGD trigger.

    Adds ``val_loss``, ``val_ppl`` and ``asgd`` to the epoch logs; put it before TensorBoard / CSVLogger.
    """

    def __init__(self, valid_batched: np.ndarray, bptt: int, nonmono: int, output_dir: Optional[str] = None,
                 val_losses: Sequence[float] = (), best_val_loss: float = float("inf"), verbose: int = 0):
        super().__init__()
        self.valid_batched, self.bptt, self.nonmono = valid_batched, bptt, nonmono
        self.output_dir, self.verbose = output_dir, verbose
        self.val_losses: List[float] = list(val_losses)
        self.best_val_loss = float(best_val_loss)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        with averaged_weights(self.model, optimizer) as averaged:
            val_loss = evaluate_loss(self.model, self.valid_batched, self.bptt)
            if val_loss < self.best_val_loss:
                self.best_val_loss = val_loss
                if self.output_dir:
                    save_weights_atomic(self.model, RunFiles(self.output_dir).best_weights)
        if not averaged:
            if should_switch_to_asgd(self.val_losses + [val_loss], self.nonmono):
                optimizer.start_averaging()
                if self.verbose:
                    print(f"epoch {epoch + 1}: switching to averaged SGD")
            self.val_losses.append(val_loss)
        logs.update(val_loss=val_loss, val_ppl=math.exp(val_loss), asgd=float(optimizer.is_averaging))
        if self.verbose:
            print(f"epoch {epoch + 1}: valid loss {val_loss:.4f} ppl {math.exp(val_loss):.2f}"
                  f"{' (averaged)' if averaged else ''}")

    def state(self) -> Dict[str, Any]:
        return {"val_losses": self.val_losses, "best_val_loss": self.best_val_loss}


class EpochLogs(keras.callbacks.Callback):
    """Every epoch's logs (the validation's included: put it after ``ValidationAndASGD``), carried in the checkpoint
    so that the history of a resumed run, like that of an uninterrupted one, starts at epoch 1."""

    def __init__(self, history: Optional[Dict[str, List[float]]] = None):
        super().__init__()
        self.history: Dict[str, List[float]] = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


@dataclasses.dataclass
class RNNTrainResult:
    epochs_done: int
    val_losses: List[float]
    best_val_loss: float
    history: Dict[str, List[float]]  # the epochs of this call
    run_history: Dict[str, List[float]] = dataclasses.field(default_factory=dict)  # every epoch of the run, from 1

    @property
    def best_val_ppl(self) -> float:
        return math.exp(self.best_val_loss)


def train_windows(train_batched: np.ndarray, config: TrainConfig, initial_epoch: int, epochs: int,
                  strategy: tf.distribute.Strategy):
    """(the train windows of epochs initial_epoch..epochs-1 as `strategy`'s replicas take them, windows per epoch):
    each replica gets its rows of every window (``distribute.distribute_row_streams``)."""
    def windows_for_rows(start, stop):
        return lm_dataset(train_batched[start:stop], config.bptt, seed=config.seed, initial_epoch=initial_epoch,
                          epochs=epochs, max_seq_len_delta=config.max_seq_len_delta)[0]

    _, steps = lm_dataset(train_batched[:1], config.bptt, seed=config.seed, initial_epoch=initial_epoch, epochs=epochs,
                          max_seq_len_delta=config.max_seq_len_delta)
    return distribute.distribute_row_streams(strategy, windows_for_rows, config.batch_size), steps


def fit(model: RNNModel, train_ids: np.ndarray, valid_ids: np.ndarray, config: TrainConfig,
          output_dir: Optional[str] = None, epochs: Optional[int] = None, resume: bool = False,
          callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int = 0,
          write_dir: Optional[str] = None) -> RNNTrainResult:
    """Trains a compiled ``RNNModel`` on the id streams ``train_ids`` / ``valid_ids`` (1-D, e.g. ``Corpus.train``).

    With ``output_dir`` the state is checkpointed every epoch and the best (validation) weights are kept in
    ``output_dir/best.weights.h5``; with ``resume`` a checkpoint there is restored first and training continues
    from its epoch. Returns the validation history; load the best weights with ``model.load_weights`` afterwards.
    A model built in a distribution strategy's scope trains under it (``batch_size`` the global batch); a non-chief
    worker of a multi-worker run reads the chief's checkpoint in `output_dir` and writes to `write_dir` (its own
    temporary directory, ``distribute.worker_write_dir``).
    """
    write_dir = write_dir or output_dir
    strategy = model.distribute_strategy
    epochs = int(epochs or config.epochs)
    train_batched = batchify(train_ids, config.batch_size)
    valid_batched = batchify(valid_ids, config.eval_batch_size)
    if not isinstance(getattr(model, "optimizer", None), AveragedSGD):
        raise ValueError("Compile the model with an AveragedSGD optimizer first (the ASGD switch needs it): "
                         "darts_tf.rnn.train.compile_model(model, config).")
    meta: Dict[str, Any] = {"epochs_done": 0, "val_losses": [], "best_val_loss": float("inf"), "history": {}}
    if resume and output_dir and checkpoint.has_state(output_dir):
        meta.update(checkpoint.restore_state(output_dir, model, [model.optimizer]))
        logging.info("Resuming %s from the end of epoch %d of %d.", output_dir, int(meta["epochs_done"]), epochs)
    initial_epoch = int(meta["epochs_done"])
    # every worker of a multi-worker run read the chief's checkpoint (output_dir must be storage they all read)
    distribute.check_same_epoch(strategy, initial_epoch, output_dir or "")
    validation = ValidationAndASGD(valid_batched, config.bptt, config.nonmono, write_dir, meta["val_losses"],
                                   meta["best_val_loss"], verbose=verbose)
    guard = NonFiniteGuard(state_path=RunFiles(write_dir).state if write_dir else None)
    epoch_logs = EpochLogs(meta["history"])
    all_callbacks: List[keras.callbacks.Callback] = [guard, FirstStepNotice(), validation, epoch_logs]
    if write_dir:
        all_callbacks.append(checkpoint.EpochCheckpoint(
            write_dir, [model.optimizer], extra_fn=lambda epoch: {**validation.state(), "history": epoch_logs.history}))
    all_callbacks.extend(callbacks)
    history: Dict[str, List[float]] = {}
    if initial_epoch < epochs:
        check_replica_batch(config.batch_size, strategy.num_replicas_in_sync)
        dataset, steps = train_windows(train_batched, config, initial_epoch, epochs, strategy)
        with strategy.scope():  # each replica carries the rows of its share
            model.carried.reset(TRAIN, batch_size=config.batch_size // strategy.num_replicas_in_sync)
        fitted = model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                           callbacks=all_callbacks, verbose=verbose, shuffle=False)  # the stream is shuffled
        history = {k: [float(x) for x in v] for k, v in fitted.history.items()}
    return RNNTrainResult(epochs_done=max(epochs, initial_epoch), val_losses=list(validation.val_losses),
                          best_val_loss=validation.best_val_loss, history=history, run_history=epoch_logs.history)


# ----------------------------------------------------------------------------------------------- the run
def train(config: TrainConfig, output_dir: str, data_dir: Optional[str] = None, preset: str = "",
          resume: bool = False, export: bool = False, callbacks: Sequence[keras.callbacks.Callback] = (),
          verbose: int = 0) -> Dict[str, Any]:
    """Trains ``RNNModel(config.genotype)`` on the corpus in `data_dir` and writes the run directory; returns
    metrics.json (valid/test perplexity of the best-validation weights, history, parameters)."""
    if not output_dir:
        raise ValueError("output_dir is required: the run directory for the model, vocabulary, metrics and checkpoints.")
    if not data_dir:
        if preset != SMOKE:
            raise ValueError("data_dir is required: a directory with train.txt, valid.txt and test.txt (PTB / "
                             f"WikiText-2 layout), or '{SMOKE}' for the offline corpus.")
        data_dir = SMOKE
    genotype = gt.as_genotype(config.genotype, "rnn")  # a name, a JSON file or inline JSON
    strategy = make_strategy(config.strategy)  # before TensorFlow's first op (multi-worker collectives)
    check_replica_batch(config.batch_size, strategy.num_replicas_in_sync)
    check_output_dir(output_dir)
    # The corpus is read and checked (a missing, malformed or too small one refused) before the run directory is
    # created.
    logging.info("Loading the corpus %s ...", data_dir)
    corpus = load_corpus(data_dir, config.max_vocab, config.strict_vocab)
    logging.info("Corpus %s: %s", data_dir, describe_stats(corpus.stats))
    for split, flag in (("train", "batch_size"), ("valid", "eval_batch_size"), ("test", "test_batch_size")):
        try:  # a split too small for its batch is refused here, not after the first epoch
            batchify(getattr(corpus, split), getattr(config, flag))
        except ValueError as e:
            raise ValueError(f"The {split} split is too small for --{flag}: {e}") from None
    # The chief writes output_dir; another worker of a multi-worker run writes a temporary directory of its own
    # (removed at the end) and reads the chief's checkpoint from output_dir.
    write_dir = distribute.worker_write_dir(output_dir, strategy)
    try:
        metrics = _train_in(config, genotype, corpus, strategy, output_dir, write_dir, data_dir, preset, resume,
                            export, callbacks, verbose)
    finally:
        distribute.remove_worker_dir(write_dir, output_dir)
    logging.info("valid perplexity %.2f, test perplexity %.2f", metrics["valid_ppl"], metrics["test_ppl"])
    return metrics


def _train_in(config, genotype, corpus, strategy, output_dir, write_dir, data_dir, preset, resume, export, callbacks,
              verbose) -> Dict[str, Any]:
    """``train`` once the strategy, the corpus and this process's write directory are settled."""
    outputs = RunFiles(write_dir)
    run_config = {"preset": preset, "data_dir": data_dir, **dataclasses.asdict(config)}
    checkpoint.check_run_config(write_dir, run_config, resume,
                                ignore=("resume", "epochs", "export", "verbose", "strategy"))
    gt.save_genotype(genotype, outputs.genotype, {"source": config.genotype})
    corpus.save_vocab(outputs.vocab)

    checkpoint.start_run(config.seed)
    logging.info("Building the network (%s, %d units) under %s ...", config.genotype, config.units,
                 distribute.describe(strategy))
    with strategy.scope():  # the variables mirrored on every replica (the carried hidden state: per replica)
        model = compile_model(build_model(dataclasses.replace(config, genotype=outputs.genotype), corpus.vocab_size),
                              config)
    distribute.fix_keras_multi_worker(model)  # no-op but under multi_worker
    check_output_dir(write_dir, checkpoint.state_size_bytes(model))
    params = int(sum(v.numpy().size for v in model.trainable_variables))
    logging.info("RNN %s: %.2fM parameters, vocabulary %d, %d train tokens.", config.genotype, params / 1e6,
                 corpus.vocab_size, len(corpus.train))
    start = time.time()
    board = keras.callbacks.TensorBoard(outputs.tensorboard, write_graph=False)
    result = fit(model, corpus.train, corpus.valid, config, output_dir, resume=resume,
                 callbacks=[board, *callbacks], verbose=verbose, write_dir=write_dir)
    if io_utils.isfile(outputs.best_weights):  # local or remote (gs://, ram://)
        model.load_weights(outputs.best_weights)
    ppl = corpus_perplexities(model, corpus, config.eval_batch_size, config.test_batch_size, config.bptt)
    save_model_atomic(model, outputs.model)
    metrics = {**ppl, "best_val_loss": result.best_val_loss, "best_val_ppl": result.best_val_ppl,
               "epochs_done": result.epochs_done, "history": result.run_history, "val_losses": result.val_losses,
               "params": params, "params_M": params / 1e6, "vocab_size": corpus.vocab_size,
               "genotype": config.genotype, "preset": preset, "data_dir": data_dir, "corpus": corpus.stats,
               "wall_time_s": time.time() - start}
    if export:
        from darts_tf.rnn.export import export_saved_model

        export_saved_model(model, outputs.saved_model, corpus.vocab, metadata={
            k: metrics[k] for k in ("valid_ppl", "test_ppl", "genotype", "preset", "data_dir", "params")},
            version=1)  # TF Serving's base_path/<version>/ layout
    write_json(outputs.metrics, metrics)
    return metrics
