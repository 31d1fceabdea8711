"""Guards against the collapse of a DARTS search onto parameter-free operations (skip-connects, pools), each one
switch of ``CollapseGuards`` that is off by default (plain DARTS), validated here and nowhere else:

* ``skip_dropout`` (P-DARTS, Chen et al. 2019, "search space regularization"): dropout on the identity skip_connect
  candidate during the search, at a rate that decays over the epochs (``linear_decay``);
  ``darts_tf.cnn.search_space.MixedOp``.
* ``max_skip_connects`` (P-DARTS, the same section): at most M skip_connects in the derived normal cell, the weakest
  ones replaced by their edge's next-best choice (``darts_tf.genotypes.cap_skip_connects``).
* ``aux_skip_beta`` (DARTS-, Chu et al. 2021): an auxiliary skip connection beside every mixed edge, outside
  the softmax, weighted by beta that decays linearly from beta0 to 0 (``linear_decay``); ``MixedOp``.
* ``sdarts_epsilon`` (SDARTS-RS, Chen & Hsieh 2020, random smoothing): the weight step sees alpha + U(-eps, eps), the
  architecture step the unperturbed alpha (``perturbed_alphas``); ``darts_tf.bilevel``.
* ``beta_decay`` (beta-DARTS, Ye et al. 2022): lambda * L_beta added to the validation loss of the architecture
  step, lambda ramped up linearly from 0 (``linear_ramp``, ``beta_decay_loss``); ``darts_tf.bilevel``.

The scheduled values live in non-trainable variables of the search network (``guard_values``), one per guard that
is on, set at the start of every epoch by ``CollapseSchedule`` (a Keras callback), so a resumed search continues
the schedule where it stopped. ``ROBUST`` is the ``robust`` preset of darts-search.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, List, Optional, Sequence

import keras
import tensorflow as tf

# the guards whose value follows a per-epoch schedule (a guard_values variable each, where the guard is on)
SCHEDULED = ("skip_dropout", "aux_skip_beta", "beta_decay")

# absl flag metadata of the guard fields (``darts_tf.cli.common.define_flags_from_dataclass``)
GUARD_FLAG_METADATA = {
    "skip_dropout": {"help": "P-DARTS: dropout rate on the skip_connect (identity) candidates during the search, "
                             "decayed linearly over the epochs: rate * (1 - epoch / epochs). 0 = off."},
    "max_skip_connects": {"help": "P-DARTS: at most this many skip_connects in the derived normal cell; the weakest "
                                  "are replaced by their edge's next-best non-skip op (edges re-ranked). 0 = no cap."},
    "aux_skip_beta": {"help": "DARTS-: initial weight beta0 of an auxiliary skip connection beside every mixed edge "
                              "(outside the softmax; FactorizedReduce on reduction edges), decayed linearly to 0: "
                              "beta0 * (1 - epoch / epochs). 0 = off."},
    "sdarts_epsilon": {"help": "SDARTS-RS: the weight step sees alpha + U(-eps, eps) (random smoothing, a new draw "
                               "every step, seeded); the architecture step sees alpha. 0 = off."},
    "beta_decay": {"help": "beta-DARTS: weight lambda of the Beta-Decay loss mean_edges logsumexp(alpha) added to the "
                           "validation loss of the architecture step, ramped up linearly: lambda * epoch / epochs. "
                           "0 = off."},
}

# The `robust` search preset: every guard on. Rates from the papers (P-DARTS' middle skip dropout 0.3 and its cap
# M = 2; DARTS-' beta0 = 1; SDARTS-RS' eps = 0.3; beta-DARTS' official CNN schedule lambda_e = 0.5 e, which
# linear_ramp gives with lambda = 25 over 50 epochs).
ROBUST = {"skip_dropout": 0.3, "max_skip_connects": 2, "aux_skip_beta": 1.0, "sdarts_epsilon": 0.3,
          "beta_decay": 25.0}


@dataclasses.dataclass(frozen=True)
class CollapseGuards:
    """The collapse guards of a search (all off by default: plain DARTS); validated once, here."""

    skip_dropout: float = 0.0  # P-DARTS: initial dropout rate of the identity skip_connect candidates
    max_skip_connects: Optional[int] = 0  # P-DARTS: skip_connect cap of the derived normal cell (0 / None: none)
    aux_skip_beta: float = 0.0  # DARTS-: initial weight of the auxiliary skip connection of every edge
    sdarts_epsilon: float = 0.0  # SDARTS-RS: half-width of the uniform perturbation of alpha in the weight step
    beta_decay: float = 0.0  # beta-DARTS: final weight lambda of the Beta-Decay loss

    def __post_init__(self):
        for name in ("skip_dropout", "aux_skip_beta", "sdarts_epsilon", "beta_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"--{name} must be a number >= 0 (0 turns the guard off). Received: {name}={value!r}")
            object.__setattr__(self, name, float(value))
        if self.skip_dropout >= 1.0:
            raise ValueError(f"--skip_dropout must be in [0, 1): a rate of 1 would drop every skip_connect output. "
                             f"Received: skip_dropout={self.skip_dropout}")
        cap = self.max_skip_connects
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(f"--max_skip_connects must be an integer >= 0 (0 = no cap). "
                             f"Received: max_skip_connects={cap!r}")
        object.__setattr__(self, "max_skip_connects", int(cap or 0))

    @property
    def any_on(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))

    def scheduled_values(self, epoch: int, epochs: int) -> Dict[str, float]:
        """The value of each scheduled guard that is on, at (0-based) `epoch` of `epochs`."""
        values = {"skip_dropout": linear_decay(self.skip_dropout, epoch, epochs),
                  "aux_skip_beta": linear_decay(self.aux_skip_beta, epoch, epochs),
                  "beta_decay": linear_ramp(self.beta_decay, epoch, epochs)}
        return {k: v for k, v in values.items() if getattr(self, k)}


def linear_decay(value: float, epoch: int, epochs: int) -> float:
    """value * (1 - epoch / epochs): the full value in the first epoch (epoch 0), value / epochs in the last.

    DARTS-' beta (its DecayScheduler 'linear' with T_max = epochs) and, here, P-DARTS' skip dropout rate (P-DARTS
    decays it linearly in its warm-up epochs, then exponentially; this search has no warm-up stage, and the linear
    form keeps the same shape whatever the number of epochs)."""
    return float(value) * (1.0 - epoch / max(int(epochs), 1))


def linear_ramp(value: float, epoch: int, epochs: int) -> float:
    """value * epoch / epochs: 0 in the first epoch, value * (epochs - 1) / epochs in the last (beta-DARTS' lambda;
    its official CNN search uses 50 * epoch / 100 over 50 epochs, i.e. value 25 here)."""
    return float(value) * epoch / max(int(epochs), 1)


def beta_decay_loss(alphas: Sequence[tf.Tensor]) -> tf.Tensor:
    """The Beta-Decay loss of beta-DARTS (Ye et al. 2022, CVPR; the smoothmax (logsumexp) form of the regulariser
    of the softmax-activated architecture parameters, as `mlc_loss` in the authors' optimizers/darts/architect.py):

        L_beta = mean over edges (i, j) of log sum_k exp(alpha_k^(i,j)),

    the mean taken over the edge rows of every architecture variable together (28 for a CNN cell pair of 14 edges
    each). Its gradient, softmax(alpha) / edges, pushes the largest alphas down the most."""
    rows = tf.concat([tf.reshape(a, [-1, a.shape[-1]]) for a in alphas], axis=0)
    return tf.reduce_mean(tf.reduce_logsumexp(rows, axis=-1))


def beta_decay_gradient(alphas: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """grad_alpha L_beta (``beta_decay_loss``). L_beta depends on alpha alone, so lambda * this gradient is what
    adding lambda * L_beta to L_val adds to the architecture gradient in every mode (first order, exact, FD)."""
    alphas = list(alphas)
    with tf.GradientTape() as tape:
        tape.watch(alphas)
        loss = beta_decay_loss(alphas)
    return tape.gradient(loss, alphas)


def perturbation(shapes: Sequence, epsilon: float, seed, dtype="float32") -> List[tf.Tensor]:
    """U(-epsilon, epsilon) of each shape (SDARTS-RS' random smoothing), drawn with `seed` (a
    ``keras.random.SeedGenerator``: a new draw every call, the same sequence for the same seed)."""
    return [keras.random.uniform(tuple(s), minval=-epsilon, maxval=epsilon, dtype=dtype, seed=seed) for s in shapes]


@contextlib.contextmanager
def perturbed_alphas(arch_variables: Sequence[keras.Variable], epsilon: float, seed):
    """Within the block the architecture variables hold alpha + U(-eps, eps) (``perturbation``); on exit they hold
    alpha again, exactly (the saved values are assigned back, not the noise subtracted). Nothing with epsilon 0."""
    if not epsilon:
        yield
        return
    saved = [tf.identity(a.value) for a in arch_variables]
    for a, s, noise in zip(arch_variables, saved, perturbation([a.shape for a in arch_variables], epsilon, seed,
                                                              arch_variables[0].dtype)):
        a.assign(s + noise)
    try:
        yield
    finally:
        for a, s in zip(arch_variables, saved):
            a.assign(s)


class CollapseSchedule(keras.callbacks.Callback):
    """Sets the search network's scheduled guard values (``guard_values``) at the start of every epoch of a search
    of `epochs` epochs (from ``CollapseGuards.scheduled_values``); a resumed fit starts at its initial epoch."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        set_guard_epoch(self.model, epoch, self.epochs)


def set_guard_epoch(model, epoch: int, epochs: int) -> Dict[str, float]:
    """Assigns the scheduled guard values of `epoch` to `model.guard_values`; returns them."""
    values = model.guards.scheduled_values(epoch, epochs)
    for name, value in values.items():
        model.guard_values[name].assign(value)
    return values
