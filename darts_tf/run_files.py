"""The one place that names the files of a run directory (search, training, evaluation; CNN and RNN alike).

Every stage writes into a run directory and every reader finds its files through ``RunFiles``; nothing else
spells a file name. The root may be local or remote (``gs://bucket/run``, ``ram://run``): the paths are joined with
'/' either way, and ``darts_tf.io_utils`` reads and writes them. Which files a run has depends on its stage::

    run_config.json          the flags of the run (a resume with other flags is refused)      every stage
    training_state.npz       the whole training state, every epoch (darts_tf.checkpoint)      every stage
    flags.txt                the command line of the script that started the run               scripts
    genotype.json            the genotype (search: derived from the final alphas, with lineage) every stage
    metrics.json             per-epoch history and the final figures                            every stage
    tensorboard/             TensorBoard logs                                                   every stage
    genotypes/epoch_NNN.json the genotype after every epoch                                     search
    genotypes/sample_NNN.json the samples of the random-search baseline                         random search
    alphas.npz               final alphas by name                                               finished search
    alpha_history.npz        [epochs, edges, ops] per alpha name, every epoch                   search
    model.keras              the trained network (written atomically)                           training
    data_info.json           image shape, normalisation, class names (what export needs)        CNN training
    saved_model/             the serving SavedModel (with --export)                             training
    vocab.txt                the corpus vocabulary (token id = line number)                     RNN search, training
    best.weights.h5          the weights with the best validation perplexity so far             RNN training
"""

from __future__ import annotations

import dataclasses
import os

RUN_CONFIG = "run_config.json"
STATE = "training_state.npz"
FLAGS = "flags.txt"
GENOTYPE = "genotype.json"
METRICS = "metrics.json"
TENSORBOARD = "tensorboard"
GENOTYPES = "genotypes"
ALPHAS = "alphas.npz"
ALPHA_HISTORY = "alpha_history.npz"
MODEL = "model.keras"
DATA_INFO = "data_info.json"
SAVED_MODEL = "saved_model"
VOCAB = "vocab.txt"
BEST_WEIGHTS = "best.weights.h5"


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The paths of the files of the run directory `root`."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    run_config = property(lambda self: self.path(RUN_CONFIG))
    state = property(lambda self: self.path(STATE))
    flags = property(lambda self: self.path(FLAGS))
    genotype = property(lambda self: self.path(GENOTYPE))
    metrics = property(lambda self: self.path(METRICS))
    tensorboard = property(lambda self: self.path(TENSORBOARD))
    alphas = property(lambda self: self.path(ALPHAS))
    alpha_history = property(lambda self: self.path(ALPHA_HISTORY))
    model = property(lambda self: self.path(MODEL))
    data_info = property(lambda self: self.path(DATA_INFO))
    saved_model = property(lambda self: self.path(SAVED_MODEL))
    vocab = property(lambda self: self.path(VOCAB))
    best_weights = property(lambda self: self.path(BEST_WEIGHTS))

    def epoch_genotype(self, epoch: int) -> str:
        return self.path(GENOTYPES, f"epoch_{epoch:03d}.json")

    def sample_genotype(self, sample: int) -> str:
        return self.path(GENOTYPES, f"sample_{sample:03d}.json")


def run_dir_of(path: str) -> str:
    """The run directory of `path`: itself when it is a directory, else the directory holding the file (local or
    remote, gs:// or ram://, alike)."""
    from darts_tf import io_utils

    if io_utils.isdir(path):
        return path
    return path.rstrip("/").rpartition("/")[0] if io_utils.is_remote(path) else os.path.dirname(os.path.abspath(path))
