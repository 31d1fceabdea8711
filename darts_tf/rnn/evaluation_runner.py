"""Architecture evaluation of a recurrent cell end to end (paper A.2.2 PTB, A.2.4 WikiText-2 transfer): a run
directory with the trained model, its vocabulary and its perplexities; the one writer and reader of that layout.

Run directory (``RNNRunOutputs`` names every file)::

    run_config.json      preset, data_dir and every RNNTrainConfig field (a resume with other flags is refused)
    training_state.npz   the whole training state every epoch (darts_tf.checkpoint; --resume continues it)
    best.weights.h5      the weights with the best validation perplexity so far (ASGD averages once switched)
    model.keras          the final model: the best weights, reloadable with keras.models.load_model
    vocab.txt            the corpus vocabulary (token id = line number)
    genotype.json        the cell
    metrics.json         valid/test perplexity of model.keras, per-epoch history, parameters, wall time
    tensorboard/         per-epoch loss / val_loss / val_ppl / asgd
    saved_model/         with --export: darts_tf.rnn.export's SavedModel (token ids -> next-token log-probs)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional, Sequence

import keras
from absl import logging

from darts_tf.io_utils import write_json
from darts_tf import checkpoint
from darts_tf import genotypes as gt
from darts_tf.data.text import Corpus, batchify, load_vocab, smoke_corpus
from darts_tf.rnn.training import BEST_WEIGHTS_FILE, RNNTrainConfig, build_model, compile_model, evaluate_perplexity, train

SMOKE_DATA = "smoke"  # --data_dir value (or no data_dir with the smoke preset): the offline corpus


@dataclasses.dataclass(frozen=True)
class RNNRunOutputs:
    """File names of an RNN evaluation run directory."""

    root: str

    def path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    model = property(lambda self: self.path("model.keras"))
    vocab = property(lambda self: self.path("vocab.txt"))
    genotype = property(lambda self: self.path("genotype.json"))
    metrics = property(lambda self: self.path("metrics.json"))
    best_weights = property(lambda self: self.path(BEST_WEIGHTS_FILE))
    run_config = property(lambda self: self.path(checkpoint.CONFIG_FILE))
    tensorboard = property(lambda self: self.path("tensorboard"))
    saved_model = property(lambda self: self.path("saved_model"))
    smoke_corpus = property(lambda self: self.path("smoke_corpus"))


def resolve_rnn_genotype(text: str) -> gt.RecurrentGenotype:
    """A published RNN genotype name (DARTS_V1, DARTS_V2, ENAS), a genotype JSON file, or inline JSON text."""
    if not isinstance(text, str) or not text.strip():
        raise gt.GenotypeError(f"genotype must be a published RNN genotype name ({', '.join(sorted(gt.RNN_GENOTYPES))}),"
                               f" a genotype JSON file or inline JSON. Received: {text!r}")
    if text.lstrip().startswith("{"):
        return gt.genotype_from_json(text, kind="rnn")
    return gt.resolve_genotype(text, kind="rnn")


def load_corpus(data_dir: Optional[str], output_dir: str) -> Corpus:
    """The corpus in `data_dir` (train/valid/test.txt), or for 'smoke' the offline one written into the run."""
    if data_dir == SMOKE_DATA:
        directory = RNNRunOutputs(output_dir).smoke_corpus
        if not os.path.isfile(os.path.join(directory, "test.txt")):
            smoke_corpus(directory)
        return Corpus.from_directory(directory)
    return Corpus.from_directory(data_dir)


def corpus_perplexities(model, corpus: Corpus, config: RNNTrainConfig) -> Dict[str, float]:
    """Validation (eval_batch_size) and test (test_batch_size) perplexity with fixed bptt windows, as train.py."""
    return {"valid_ppl": evaluate_perplexity(model, batchify(corpus.valid, config.eval_batch_size), config.bptt),
            "test_ppl": evaluate_perplexity(model, batchify(corpus.test, config.test_batch_size), config.bptt)}


def run_rnn_training(config: RNNTrainConfig, output_dir: str, data_dir: Optional[str] = None, preset: str = "",
                     resume: bool = False, export: bool = False, callbacks: Sequence[keras.callbacks.Callback] = (),
                     verbose: int = 0) -> Dict[str, Any]:
    """Trains ``RNNModel(config.genotype)`` on the corpus in `data_dir` and writes the run directory; returns
    metrics.json (valid/test perplexity of the best-validation weights, history, parameters)."""
    if not output_dir:
        raise ValueError("output_dir is required: the run directory for the model, vocabulary, metrics and checkpoints.")
    if not data_dir:
        if preset != SMOKE_DATA:
            raise ValueError("data_dir is required: a directory with train.txt, valid.txt and test.txt (PTB / "
                             f"WikiText-2 layout), or '{SMOKE_DATA}' for the offline corpus.")
        data_dir = SMOKE_DATA
    genotype = resolve_rnn_genotype(config.genotype)
    outputs = RNNRunOutputs(output_dir)
    run_config = {"preset": preset, "data_dir": data_dir, **dataclasses.asdict(config)}
    checkpoint.check_run_config(output_dir, run_config, resume, ignore=("resume", "epochs", "export", "verbose"))
    corpus = load_corpus(data_dir, output_dir)
    gt.save_genotype(genotype, outputs.genotype, {"source": config.genotype})
    corpus.save_vocab(outputs.vocab)

    checkpoint.start_run(config.seed)
    model = compile_model(build_model(dataclasses.replace(config, genotype=outputs.genotype), corpus.vocab_size), config)
    params = int(sum(v.numpy().size for v in model.trainable_variables))
    logging.info("RNN %s: %.2fM parameters, vocabulary %d, %d train tokens.", config.genotype, params / 1e6,
                 corpus.vocab_size, len(corpus.train))
    start = time.time()
    board = keras.callbacks.TensorBoard(outputs.tensorboard, write_graph=False)
    result = train(model, corpus.train, corpus.valid, config, output_dir, resume=resume,
                   callbacks=[board, *callbacks], verbose=verbose)
    if os.path.isfile(outputs.best_weights):
        model.load_weights(outputs.best_weights)
    ppl = corpus_perplexities(model, corpus, config)
    from darts_tf.training import save_model_atomic

    save_model_atomic(model, outputs.model)
    metrics = {**ppl, "best_val_loss": result.best_val_loss, "best_val_ppl": result.best_val_ppl,
               "epochs_done": result.epochs_done, "history": result.history, "val_losses": result.val_losses,
               "params": params, "params_M": params / 1e6, "vocab_size": corpus.vocab_size,
               "genotype": config.genotype, "preset": preset, "data_dir": data_dir, "wall_time_s": time.time() - start}
    if export:
        from darts_tf.rnn.export import export_language_model

        export_language_model(model, outputs.saved_model, corpus.vocab, metadata={
            k: metrics[k] for k in ("valid_ppl", "test_ppl", "genotype", "preset", "data_dir", "params")})
    write_json(outputs.metrics, metrics)
    logging.info("valid perplexity %.2f, test perplexity %.2f", ppl["valid_ppl"], ppl["test_ppl"])
    return metrics


def read_run_config(run_dir: str) -> Dict[str, Any]:
    path = RNNRunOutputs(run_dir).run_config
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist; pass the --output_dir of a darts-rnn-train run.")
    with open(path) as f:
        return json.load(f)


def _run_dir(model_path: str) -> str:
    if os.path.isdir(model_path):
        return model_path
    return os.path.dirname(os.path.abspath(model_path))


def load_trained_model(model_path: str):
    """The model.keras of a run (or the run directory holding one)."""
    from darts_tf.rnn.models import RNNModel  # registers the serializable classes

    path = RNNRunOutputs(model_path).model if os.path.isdir(model_path) else model_path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Model file {path!r} does not exist; pass the model.keras written by darts-rnn-train "
                                "(or its output directory).")
    model = keras.models.load_model(path, compile=False)
    if not isinstance(model, RNNModel):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a recurrent language model (RNNModel); pass a "
                         "model written by darts-rnn-train.")
    return model


def evaluate_trained(model_path: str, data_dir: Optional[str] = None) -> Dict[str, Any]:
    """Valid and test perplexity of a run's model.keras on its corpus (data_dir and batch sizes from the run)."""
    run_dir = _run_dir(model_path)
    run = read_run_config(run_dir)
    fields = {f.name for f in dataclasses.fields(RNNTrainConfig)}
    config = RNNTrainConfig(**{k: v for k, v in run.items() if k in fields})
    model = load_trained_model(model_path)
    corpus = load_corpus(data_dir or run.get("data_dir"), run_dir)
    vocab_path = RNNRunOutputs(run_dir).vocab
    if os.path.isfile(vocab_path) and load_vocab(vocab_path) != corpus.vocab:
        raise ValueError(f"The corpus vocabulary differs from the run's {vocab_path}: the model was trained on "
                         "another corpus; pass the --data_dir it was trained with.")
    if corpus.vocab_size != model.vocab_size:
        raise ValueError(f"The corpus has {corpus.vocab_size} words but the model {model.vocab_size}.")
    return {**corpus_perplexities(model, corpus, config), "model": os.path.abspath(model_path),
            "data_dir": data_dir or run.get("data_dir")}
