"""TensorBoard views of an architecture search (the ``architecture/`` run of its ``tensorboard/`` directory, written
by ``darts_tf.search.ArchitectureLogger`` at Keras' step, the 0-based epoch index), and HParams sessions.

Tags, per epoch (``<cell>``: normal / reduce / recurrent; ``<edge>``: ``n3<-c_{k-1}``, see ``darts_tf.health``):

    softmax_<alpha name>                     image: labelled heatmap of softmax(alpha), colours over the data's range
    <alpha name>                             histogram of alpha
    op_weights/<cell>/<edge>/<op>            scalar: softmax(alpha) of each op of each edge
    edge_entropy/<cell>/<edge>, edge_max_weight/<cell>/<edge>
    beta_<cell>, edge_weights/<cell>/<edge>  histogram of beta, scalar: its node softmax (PC-DARTS edge normalisation)
    health/<key>                             scalar: the ``darts_tf.health`` scalars (skip_connects/<cell>, ...)
    genotype                                 text: the derived cell, one Markdown table row per node
    cell/<normal|reduction|recurrent>        image: the derived cell drawn by Graphviz (skipped without `dot`)
    early_stop                               text: why and when the search stopped (an early-stopped search only)

``write_hparams`` writes one HParams session (the searches' seeds and modes, the select stage's candidates).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from darts_tf import genotypes as gt
from darts_tf import health as hl
from darts_tf import visualize

_noted = set()


def _note_once(key: str, message: str) -> None:
    if key not in _noted:
        _noted.add(key)
        logging.warning(message)


def _png_image(png: bytes) -> tf.Tensor:
    return tf.image.decode_png(png, channels=3)[None]


def flat_heatmap(weights: np.ndarray, cell: int = 8) -> np.ndarray:
    """[1, edges*cell, ops*cell, 1] image of `weights` scaled to its min..max (the view without matplotlib)."""
    w = np.asarray(weights, np.float32)
    span = float(w.max() - w.min())
    w = (w - w.min()) / span if span > 0 else np.zeros_like(w)
    return np.kron(w, np.ones((cell, cell), np.float32))[None, :, :, None]


def heatmap_image(weights: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str = ""):
    """The labelled heatmap as an image tensor [1, H, W, 3]; the unlabelled ``flat_heatmap`` without matplotlib."""
    if not visualize.matplotlib_available():
        _note_once("matplotlib", "matplotlib is not installed: the alpha heatmaps are drawn without labels or colour "
                                 "bar (pip install -r requirements.txt installs it).")
        return flat_heatmap(weights)
    return _png_image(visualize.alpha_heatmap_png(weights, rows, columns, title))


def primitives_for(alpha: np.ndarray, primitives: Optional[Sequence[str]]) -> Sequence[str]:
    """The column names of an alpha: `primitives` when they fit, else the recurrent space's, else op0, op1, ..."""
    ops = np.shape(alpha)[-1]
    for names in (primitives, gt.RNN_PRIMITIVES):
        if names is not None and len(names) == ops:
            return list(names)
    return [f"op{i}" for i in range(ops)]


def log_alphas(alphas: Mapping[str, np.ndarray], primitives: Optional[Sequence[str]], health: hl.ArchitectureHealth,
               step: int, title: str = "") -> None:
    """The heatmap, histogram, per-edge op weights, entropy and largest weight of every alpha, at `step`; the edge
    weights of PC-DARTS' edge normalisation (beta_normal, beta_reduce) as a histogram of beta and a scalar per edge."""
    for name in gt.EDGE_BETA_NAMES:
        if name in alphas:
            cell = hl.cell_of(name.replace("beta_", "alpha_"))
            tf.summary.histogram(name, alphas[name], step=step)
            weights = gt.normalize_edge_weights(alphas[name])
            for e, edge in enumerate(hl.edge_names(len(weights), cell, sep="<-")):
                tf.summary.scalar(f"edge_weights/{cell}/{edge}", float(weights[e]), step=step)
    for name, alpha in hl.op_alphas(alphas).items():
        cell = hl.cell_of(name)
        ops = primitives_for(alpha, primitives)
        edges = hl.edge_names(np.shape(alpha)[0], cell)
        tags = hl.edge_names(np.shape(alpha)[0], cell, sep="<-")
        per_edge = health.per_edge[cell]
        weights = per_edge["weights"]
        tf.summary.image(f"softmax_{name}", heatmap_image(weights, edges, ops, f"softmax({name}) {title}".strip()),
                         step=step)
        tf.summary.histogram(name, alpha, step=step)
        for e, edge in enumerate(tags):
            for o, op in enumerate(ops):
                tf.summary.scalar(f"op_weights/{cell}/{edge}/{op}", float(weights[e, o]), step=step)
            tf.summary.scalar(f"edge_entropy/{cell}/{edge}", float(per_edge["entropy"][e]), step=step)
            tf.summary.scalar(f"edge_max_weight/{cell}/{edge}", float(per_edge["max_weight"][e]), step=step)


def log_health(scalars: Mapping[str, float], step: int) -> None:
    for key, value in scalars.items():
        tf.summary.scalar(f"health/{key}", float(value), step=step)


def log_genotype(genotype: gt.AnyGenotype, step: int, pictures: bool = True) -> None:
    """The genotype as a per-node table, and its cells drawn by Graphviz (a logged note instead without `dot`)."""
    tf.summary.text("genotype", visualize.genotype_table(genotype), step=step)
    if not pictures:
        return
    try:
        pngs = visualize.genotype_pngs(genotype)
    except visualize.GraphvizNotFoundError:
        _note_once("dot", "Graphviz's `dot` is not installed: the TensorBoard cell pictures (cell/...) are skipped "
                          "(apt-get install graphviz).")
        return
    for stem, png in pngs.items():
        tf.summary.image(f"cell/{stem}", _png_image(png), step=step)


def hparam_value(value: Any):
    """A value the HParams plugin takes (bool, int, float, str); None for one it does not."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return None


def write_hparams(logdir: str, hparams: Mapping[str, Any], metrics: Mapping[str, float], trial_id: Optional[str] = None,
                  step: int = 0) -> None:
    """One HParams session in `logdir`: the `hparams` (values of other types are left out) and the `metrics` as scalars
    at `step`. TensorBoard's HParams dashboard lists every session under its --logdir, columns inferred."""
    from tensorboard.plugins.hparams import api as hp

    values = {k: hparam_value(v) for k, v in hparams.items()}
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp.hparams({k: v for k, v in values.items() if v is not None}, trial_id=trial_id)
        for name, value in metrics.items():
            if value is not None and np.isfinite(value):
                tf.summary.scalar(name, float(value), step=step)
    writer.flush()
    writer.close()


class OneRateTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard without its own `learning_rate` scalar (the optimizer's rate at the end of the epoch, i.e.
    the next epoch's): the one learning-rate tag is epoch_lr, the rate the epoch's steps used (the search's
    ``EpochLearningRate``, the training's ``EpochScalars``)."""

    def _collect_learning_rate(self, logs):
        return logs
