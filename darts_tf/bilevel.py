"""The bilevel architecture search step shared by the CNN and RNN search networks (paper sect. 2.3).

``BilevelSearchModel.train_step`` takes ``{'train': batch, 'validation': batch}`` (the tunas
``_merge_datasets`` layout) and does, in order:

1. the architecture step on the validation batch: alpha <- Adam(grad_alpha L_val + wd_alpha * alpha), where
   grad_alpha is the function of ``ARCH_GRADIENTS`` that ``BilevelConfig.mode`` names:
     * ``first_order_gradient``: grad_alpha L_val(w, alpha) (xi = 0);
     * ``exact_gradient``: grad_alpha L_val(w', alpha) with w' = w - xi * (momentum * buf + grad_w L_train + wd * w)
       differentiated *through* w' (eq. 6 exactly, i.e. eq. 7 with its Hessian term); the network is evaluated at w'
       with Keras 3 ``stateless_call``, no variable is mutated;
     * ``finite_difference_gradient``: eq. 7-8, the Hessian-vector product by a central finite difference with
       eps = 0.01 / ||grad_w' L_val(w', alpha)||.
2. the weight step on the train batch: w <- SGD-momentum(clip(grad_w L_train) + wd * w) (``darts_tf.optim``).

The collapse guards of ``darts_tf.collapse`` that act on the step (``CollapseGuards``, all off by default) are one
line each: beta-DARTS adds lambda * grad_alpha L_beta to the architecture gradient (L_beta depends on alpha alone,
so this is the same in all three modes), and SDARTS-RS runs the weight step at alpha + U(-eps, eps).

Under a ``tf.distribute`` strategy (the model built and compiled in its scope; Keras' ``fit`` runs ``train_step`` on
every replica with an equal share of the global batch) the step is the one-device step on the global batch: every
gradient the step computes is the mean over the replicas of theirs (``numerics.replica_mean``: the inner gradient of
the virtual step w', grad_w' L_val, grad_alpha, the Hessian terms of both second-order modes, the weight gradient
before its clip), BatchNorm takes the global batch's statistics (``numerics.moments``), the logged losses are the
global batch's, and each replica hands the optimizers 1/R of the global gradient (``optimizer_share``: Keras sums
them). alpha, w and both optimisers' states are then the same on every replica after every step. The batch size is
the global one and the learning rates are not rescaled (the run does not depend on the number of replicas).

Weight decay is added to the gradient (PyTorch semantics, as the reference) rather than decoupled.
Subclasses provide the network (``call``), ``arch_variables`` and how a batch becomes inputs and a loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from darts_tf import collapse
from darts_tf.collapse import CollapseGuards
from darts_tf.numerics import at_least_float32, replica_mean, replicas_in_step, untracked_statistics
from darts_tf.optim import apply_weight_step

ARCH_MODES = ("first_order", "second_order_exact", "second_order_fd")  # the keys of ARCH_GRADIENTS
TRAIN, VALIDATION = "train", "validation"
EXACT_HVP_METHODS = ("reverse", "forward")
ZERO = tf.UnconnectedGradients.ZERO


def optimizer_share(replicas: Optional[int] = None) -> Optional[float]:
    """1/R under a step of R > 1 replicas, else None: what each replica hands a Keras optimizer of a gradient that is
    already the global one. Keras' TensorFlow optimizers all-reduce the replicas' gradients by their *sum*
    (``_all_reduce_sum_gradients``); the search's gradients are global means before the optimizers see them (the
    virtual step, the clip and the weight decay need the global gradient), so R shares of 1/R make them whole again."""
    replicas = replicas_in_step() if replicas is None else replicas
    return None if replicas == 1 else 1.0 / replicas


def optimizer_shares(grads: Sequence[tf.Tensor]) -> List[tf.Tensor]:
    """``optimizer_share`` of each gradient (unchanged with one replica)."""
    share = optimizer_share()
    return list(grads) if share is None else [share * g for g in grads]


def check_replica_batch(batch_size: int, replicas: int, flag: str = "batch_size") -> None:
    """A distributed search splits the global batch into R equal shares (the step's means are then the global
    batch's); raises a ValueError naming the fix when `batch_size` is not a multiple of `replicas`."""
    if replicas > 1 and batch_size % replicas:
        raise ValueError(f"--{flag} must be a multiple of the strategy's {replicas} replicas (it is the global batch, "
                         f"split into equal shares). Received: {flag}={batch_size}")

# absl flag metadata of the search configs' bilevel fields (``darts_tf.cli.common`` makes an enum flag of `choices`)
FLAG_METADATA = {
    "arch_mode": {"choices": ARCH_MODES, "help": "Architecture gradient: first_order (xi = 0), second_order_exact "
                                                 "(eq. 6-7) or second_order_fd (eq. 7-8, as the reference code)."},
    "xi": {"help": "Unrolled step size for the second-order modes (default: the current weight learning rate)."},
    "exact_recompute": {"help": "second_order_exact only: recompute the train batch's pass for the Hessian term after "
                                "the validation pass (bit-identical; one more forward/backward, a much lower peak "
                                "memory). --noexact_recompute keeps it instead (faster when memory allows)."},
    "exact_hvp": {"choices": EXACT_HVP_METHODS,
                  "help": "second_order_exact only: 'reverse' differentiates through the virtual step (reverse over "
                          "reverse); 'forward' takes the Hessian-vector product forward over reverse (tf.autodiff."
                          "ForwardAccumulator). Equal up to round-off; they differ in time and memory "
                          "(benchmarks/RESULTS.md)."},
}


@dataclasses.dataclass(frozen=True)
class BilevelConfig:
    """The settings of the bilevel step, validated here and nowhere else; the search configs build it from their
    flags (``SearchConfig.bilevel_config``) and the search network carries it unchanged."""

    mode: str = "first_order"  # a key of ARCH_GRADIENTS
    xi: Optional[float] = None  # the virtual step's size; None: the weights' current learning rate (paper footnote 1)
    weight_decay: float = 3e-4  # L2 on w, added to its gradient (in the weight step and in the virtual step)
    arch_weight_decay: float = 1e-3  # L2 on alpha, added to its gradient
    grad_clip: Optional[float] = 5.0  # global-norm clip of grad_w in the weight step (None or 0: none)
    # the same for the virtual step: the reference's RNN architect clips it (lr 20 would otherwise throw w' far away),
    # its CNN architect does not (None)
    unrolled_grad_clip: Optional[float] = None
    fd_epsilon: float = 0.01  # second_order_fd: eps = fd_epsilon / ||grad_w' L_val|| (paper footnote 2)
    # second_order_exact: recompute the virtual step's pass for the Hessian term instead of keeping it through the
    # validation pass (one more forward/backward of the train batch, much lower peak memory; see benchmarks/)
    exact_recompute: bool = True
    # second_order_exact: the Hessian term by differentiating the virtual step ("reverse": reverse over reverse) or by
    # ``alpha_hessian_vector_product`` ("forward": forward over reverse); equal up to round-off
    exact_hvp: str = "reverse"

    def __post_init__(self):
        if self.mode not in ARCH_MODES:
            raise ValueError(f"Unknown architecture-gradient mode {self.mode!r}. Known: {', '.join(ARCH_MODES)}.")
        if self.xi is not None and self.xi < 0:
            raise ValueError(f"xi must be >= 0 (the unrolled step size). Received: xi={self.xi}")
        if self.fd_epsilon <= 0:
            raise ValueError(f"fd_epsilon must be > 0 (eps = fd_epsilon / ||grad_w' L_val||). Received: {self.fd_epsilon}")
        if self.exact_hvp not in EXACT_HVP_METHODS:
            raise ValueError(f"--exact_hvp must be one of {', '.join(EXACT_HVP_METHODS)}. "
                             f"Received: exact_hvp={self.exact_hvp!r}")
        for name, kind in (("weight_decay", float), ("arch_weight_decay", float), ("fd_epsilon", float),
                           ("exact_recompute", bool)):
            object.__setattr__(self, name, kind(getattr(self, name)))


class BilevelSearchModel(keras.Model):
    """A supernet whose trainable variables are the weights w plus the architecture variables alpha.

    Subclasses must create their alphas with ``add_weight(trainable=True)``, list them in ``arch_variables``, and
    may override ``search_inputs``, ``search_loss``, ``search_accuracy`` and ``update_stream_state``.
    Use ``compile(optimizer=<weights' SGD>, arch_optimizer=<alphas' Adam>)``; the model must be built first.
    `guards` are its collapse guards (``darts_tf.collapse.CollapseGuards``; default: none, plain DARTS).
    """

    default_bilevel = BilevelConfig()  # the settings when the constructor is given none
    supports_forward_hvp = True  # False where tf.autodiff.ForwardAccumulator cannot run the network (RNN loop)
    reports_accuracy = True  # False for networks without an accuracy (language models): only losses are logged

    def __init__(self, bilevel: Optional[BilevelConfig] = None, guards: Optional[CollapseGuards] = None, **kwargs):
        super().__init__(**kwargs)
        self.bilevel = self.default_bilevel if bilevel is None else bilevel
        self.guards = CollapseGuards() if guards is None else guards
        # the epoch's value of each scheduled guard that is on (set by collapse.CollapseSchedule; checkpointed)
        self.guard_values = {name: self.add_weight(shape=(), initializer=keras.initializers.Constant(value),
                                                   trainable=False, name=f"guard_{name}")
                             for name, value in self.guards.scheduled_values(0, 1).items()}
        # SDARTS-RS' perturbations: a seeded stream (state checkpointed), so --deterministic runs repeat
        self.perturbation_seed = keras.random.SeedGenerator(name="sdarts_seed") if self.guards.sdarts_epsilon else None
        if self.bilevel.exact_hvp == "forward" and not self.supports_forward_hvp:
            raise ValueError(f"exact_hvp='forward' is not available for {type(self).__name__}: TensorFlow's forward-mode "
                             f"autodiff does not go through its time loop. Use exact_hvp='reverse' (the default).")
        self.arch_optimizer = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.val_loss_tracker = keras.metrics.Mean(name="val_loss")
        self.acc_tracker = keras.metrics.Mean(name="accuracy")
        self.val_acc_tracker = keras.metrics.Mean(name="val_accuracy")

    def get_config(self):
        return {"bilevel": dataclasses.asdict(self.bilevel), "guards": dataclasses.asdict(self.guards),
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "bilevel": BilevelConfig(**config["bilevel"]),
                      "guards": CollapseGuards(**config.get("guards", {}))})

    # ----------------------------------------------------------------- to override
    @property
    def arch_variables(self) -> List[keras.Variable]:
        raise NotImplementedError

    def search_inputs(self, batch, stream: str):
        """What ``call`` takes for this batch (default: the images of an (x, y) pair)."""
        return batch[0]

    def search_loss(self, batch, outputs, stream: str):
        """Scalar loss for this batch given the network outputs (default: softmax cross-entropy on logits)."""
        loss = keras.losses.sparse_categorical_crossentropy(batch[1], outputs, from_logits=True)
        return tf.reduce_mean(at_least_float32(loss))

    def search_accuracy(self, batch, outputs):
        """A per-batch accuracy to report, or None."""
        pred = tf.argmax(outputs, axis=-1, output_type=tf.int64)
        return tf.reduce_mean(tf.cast(tf.equal(pred, tf.cast(batch[1], tf.int64)), tf.float32))

    def update_stream_state(self, outputs, stream: str) -> None:
        """Carries state across batches of one stream (the RNN's hidden state); nothing by default."""

    # ----------------------------------------------------------------- variables and optimizers
    @property
    def weight_variables(self) -> List[keras.Variable]:
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def compile(self, optimizer=None, arch_optimizer=None, **kwargs):
        if not self.built:
            raise ValueError("Build the search network (call it on a batch) before compile(); the optimizers are built "
                             "for its weight and architecture variables.")
        if optimizer is None or arch_optimizer is None:
            raise ValueError("compile() needs optimizer= (for the weights w) and arch_optimizer= (for alpha).")
        super().compile(optimizer=optimizer, **kwargs)
        self.arch_optimizer = arch_optimizer
        self.optimizer.build(self.weight_variables)
        self.arch_optimizer.build(self.arch_variables)
        trainable = self.trainable_variables
        arch = {id(v) for v in self.arch_variables}
        self._arch_positions = [i for i, v in enumerate(trainable) if id(v) in arch]
        self._weight_positions = [i for i, v in enumerate(trainable) if id(v) not in arch]

    @property
    def metrics(self):
        if not self.reports_accuracy:
            return [self.loss_tracker, self.val_loss_tracker]
        return [self.loss_tracker, self.acc_tracker, self.val_loss_tracker, self.val_acc_tracker]

    def current_learning_rate(self):
        return tf.cast(self.optimizer.learning_rate, tf.float32)

    def unrolled_step_size(self, xi=None) -> tf.Tensor:
        """xi of eq. 6: `xi` if given, else the config's, else the current weight learning rate (paper footnote 1)."""
        if xi is not None:
            return xi
        return self.current_learning_rate() if self.bilevel.xi is None else tf.constant(self.bilevel.xi, tf.float32)

    def _momentum_terms(self, weights) -> List[Any]:
        """momentum * buf in w's units: Keras SGD keeps m = momentum*m - lr*g and steps w += m."""
        momentum = float(getattr(self.optimizer, "momentum", 0.0) or 0.0)
        if momentum == 0.0 or not getattr(self.optimizer, "momentums", None):
            return [tf.zeros_like(w) for w in weights]
        return [momentum * tf.cast(m.value, w.dtype) for m, w in zip(self.optimizer.momentums, weights)]

    # ----------------------------------------------------------------- the network at other weights
    def _values(self, weight_values: Sequence[tf.Tensor], arch_values: Sequence[tf.Tensor]) -> List[tf.Tensor]:
        values: List[Any] = [None] * (len(weight_values) + len(arch_values))
        for i, v in zip(self._weight_positions, weight_values):
            values[i] = v
        for i, v in zip(self._arch_positions, arch_values):
            values[i] = v
        return values

    def loss_at(self, weight_values, arch_values, batch, stream: str) -> Tuple[tf.Tensor, Any]:
        """L(w, alpha) on `batch` for the given values, through ``stateless_call`` (no variable changes; the
        BatchNorms' moving statistics, which it would discard, are not even computed: ``untracked_statistics``)."""
        non_trainable = [v.value for v in self.non_trainable_variables]
        with untracked_statistics():
            outputs, _ = self.stateless_call(self._values(weight_values, arch_values), non_trainable,
                                             self.search_inputs(batch, stream), training=True)
        return self.search_loss(batch, outputs, stream), outputs

    def search_pass(self, batch, stream: str) -> Tuple[tf.Tensor, Any]:
        """(loss, outputs) of the network as it is (its variables) on `batch`."""
        outputs = self(self.search_inputs(batch, stream), training=True)
        return self.search_loss(batch, outputs, stream), outputs

    def unrolled_clip_coefficient(self, grads) -> tf.Tensor:
        """min(1, clip / ||grad||) for the virtual step (1 without `unrolled_grad_clip`); a constant for autodiff,
        as the reference computes it on detached gradients."""
        clip = self.bilevel.unrolled_grad_clip
        if not clip:
            return tf.constant(1.0, grads[0].dtype)
        norm = tf.linalg.global_norm(grads)
        return tf.stop_gradient(tf.minimum(tf.cast(1.0, norm.dtype), clip / (norm + 1e-6)))

    def unrolled_weights(self, weights, grads, xi) -> List[tf.Tensor]:
        """w' = w - xi * (momentum * buf + grad + wd * w): one virtual step of the weight optimizer (eq. 6)."""
        wd = self.bilevel.weight_decay
        return [w + m - xi * (g + wd * w) for w, g, m in zip(weights, grads, self._momentum_terms(weights))]

    def virtual_step(self, weights, arch, train_batch, xi) -> Tuple[List[tf.Tensor], tf.Tensor]:
        """(w', clip coefficient): w' = w - xi * (momentum * buf + c * grad_w L_train(w, alpha) + wd * w).

        An enclosing tape that watches alpha records the inner gradient too, which is what makes the exact mode exact.
        """
        with tf.GradientTape() as inner:
            inner.watch(weights)
            train_loss, _ = self.loss_at(weights, arch, train_batch, TRAIN)
        g = replica_mean(inner.gradient(train_loss, weights, unconnected_gradients=ZERO))  # the global batch's
        clip = self.unrolled_clip_coefficient(g)
        return self.unrolled_weights(weights, [clip * x for x in g], tf.cast(xi, weights[0].dtype)), clip

    def alpha_hessian_vector_product(self, weights, arch, train_batch, vector) -> List[tf.Tensor]:
        """grad^2_{alpha,w} L_train(w, alpha) . vector, forward over reverse: the directional derivative along
        `vector` (in w, by ``tf.autodiff.ForwardAccumulator``) of grad_alpha L_train.

        The exact mode takes the same product in the other order (reverse over reverse, through the virtual step);
        the two agree to float64 round-off only if every op's second derivatives are right, so this is the
        independent check of the exact mode (tests/test_bilevel.py). It is how BatchNorm's ``tf.nn.moments`` was
        found to drop a Hessian term (``darts_tf.numerics.moments``).
        """
        with tf.autodiff.ForwardAccumulator(primals=weights, tangents=vector) as acc:
            grads = train_alpha_gradient(self, weights, arch, train_batch)
        return acc.jvp(grads, unconnected_gradients=ZERO)

    # ----------------------------------------------------------------- the architecture gradient
    def unrolled_alpha_gradient(self, train_batch, val_batch, mode: Optional[str] = None,
                                xi: Optional[tf.Tensor] = None) -> Tuple[List[tf.Tensor], tf.Tensor, Any]:
        """grad_alpha of the validation loss by ``ARCH_GRADIENTS[mode]`` (default: the config's mode; the tests compare
        modes on one model); returns (grads, L_val, validation outputs)."""
        return ARCH_GRADIENTS[mode or self.bilevel.mode](self, train_batch, val_batch, xi)

    # ----------------------------------------------------------------- Keras hooks
    @staticmethod
    def _split(data):
        if isinstance(data, dict):
            return data[TRAIN], data[VALIDATION]
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return data[0], data[1]
        raise ValueError("A search batch is {'train': batch, 'validation': batch}; see darts_tf.data.")

    def train_step(self, data):
        train_batch, val_batch = self._split(data)

        # ---- architecture step, on the validation batch: alpha <- arch_optimizer(grad_alpha L_val + wd_alpha * alpha)
        alpha_grads, val_loss, val_outputs = self.unrolled_alpha_gradient(train_batch, val_batch)
        self.update_stream_state(val_outputs, VALIDATION)
        alpha_grads = [g + self.bilevel.arch_weight_decay * a for g, a in zip(alpha_grads, self.arch_variables)]
        alpha_grads = self.add_beta_decay_gradient(alpha_grads)
        self.arch_optimizer.apply(optimizer_shares(alpha_grads), self.arch_variables)

        # ---- weight step, on the train batch: w <- optimizer(clip(grad_w L_train) + wd * w); with SDARTS-RS at
        # alpha + U(-eps, eps), alpha restored after it
        weights = self.weight_variables
        with collapse.perturbed_alphas(self.arch_variables, self.guards.sdarts_epsilon, self.perturbation_seed):
            with tf.GradientTape() as tape:
                loss, outputs = self.search_pass(train_batch, TRAIN)
            lr = self.current_learning_rate()  # the step's, before apply() moves the schedule on
            grads = replica_mean(tape.gradient(loss, weights, unconnected_gradients=ZERO))  # the global batch's
            apply_weight_step(self.optimizer, grads, weights, self.bilevel.grad_clip, self.bilevel.weight_decay,
                              scale=optimizer_share())
        self.update_stream_state(outputs, TRAIN)

        self._track(train_batch, outputs, loss, val_batch, val_outputs, val_loss)
        logs = {m.name: m.result() for m in self.metrics}
        logs["lr"] = lr
        return logs

    def add_beta_decay_gradient(self, alpha_grads) -> List[tf.Tensor]:
        """beta-DARTS: grad_alpha (L_val + lambda_epoch * L_beta) = alpha_grads + lambda_epoch * grad_alpha L_beta
        (``collapse.beta_decay_loss``); `alpha_grads` unchanged when the guard is off."""
        if "beta_decay" not in self.guard_values:
            return alpha_grads
        lam = self.guard_values["beta_decay"]
        regulariser = collapse.beta_decay_gradient([a.value for a in self.arch_variables])
        return [g + tf.cast(lam, g.dtype) * r for g, r in zip(alpha_grads, regulariser)]

    def _track(self, train_batch, outputs, loss, val_batch, val_outputs, val_loss):
        """The step's losses and accuracies, the global batch's (``replica_mean``), into the trackers."""
        acc = self.search_accuracy(train_batch, outputs)
        values = [loss, val_loss] + ([] if acc is None else [acc, self.search_accuracy(val_batch, val_outputs)])
        values = replica_mean(values)
        self.loss_tracker.update_state(values[0])
        self.val_loss_tracker.update_state(values[1])
        if acc is not None:
            self.acc_tracker.update_state(values[2])
            self.val_acc_tracker.update_state(values[3])

    def test_step(self, data):
        batch = data[VALIDATION] if isinstance(data, dict) else data
        outputs = self(self.search_inputs(batch, VALIDATION), training=False)
        values = [self.search_loss(batch, outputs, VALIDATION)]
        acc = self.search_accuracy(batch, outputs)
        values = replica_mean(values + ([] if acc is None else [acc]))
        self.loss_tracker.update_state(values[0])
        if acc is not None:
            self.acc_tracker.update_state(values[1])
        logs = {"loss": self.loss_tracker.result()}
        if self.reports_accuracy:
            logs["accuracy"] = self.acc_tracker.result()
        return logs


# --------------------------------------------------------------------------------------------------------------------
# The architecture gradient, one function per mode: f(model, train_batch, val_batch, xi=None) -> (grads, L_val, outputs)
# (``model`` a compiled BilevelSearchModel; xi None: ``model.unrolled_step_size()``). Each step of the second-order
# gradient is a short function whose docstring is its formula, as quark0/darts' architect.

def first_order_gradient(model, train_batch, val_batch, xi=None):
    """grad_alpha L_val(w, alpha): eq. 7 with xi = 0 (sect. 2.3, "first-order approximation"), taking the current w
    for w*(alpha) of eq. 5; `train_batch` and `xi` are not used."""
    arch = [a.value for a in model.arch_variables]
    with tf.GradientTape() as tape:
        tape.watch(arch)
        loss, outputs = model.search_pass(val_batch, VALIDATION)
    return replica_mean(tape.gradient(loss, arch, unconnected_gradients=ZERO)), loss, outputs


class Unrolled(NamedTuple):
    """What the second-order modes share (``unroll``): w, alpha, xi, the clip coefficient c, the virtual step w' and
    the tape that recorded it, and the two gradients of L_val(w', alpha) in eq. 7."""

    weights: List[tf.Tensor]
    arch: List[tf.Tensor]
    xi: tf.Tensor
    clip: tf.Tensor
    w_prime: List[tf.Tensor]
    step_tape: tf.GradientTape  # records w'(alpha) only when unroll() was asked to
    d_w: List[tf.Tensor]  # grad_w' L_val(w', alpha)
    d_alpha: List[tf.Tensor]  # grad_alpha L_val(w', alpha), w' held constant
    loss: tf.Tensor  # L_val(w', alpha)
    outputs: Any


def unroll(model, train_batch, val_batch, xi=None, record_alpha: bool = False) -> Unrolled:
    """w' = w - xi * (momentum * buf + c * grad_w L_train(w, alpha) + wd * w) (eq. 6), then grad_w' L_val(w', alpha) and
    the direct grad_alpha L_val(w', alpha) with w' a constant (eq. 7's two gradients).

    With `record_alpha` a tape watching alpha records the virtual step, inner gradient included, so that dw'/dalpha
    can be taken through it afterwards (the exact mode's kept tape); a tape that watches nothing records nothing.
    """
    arch = [a.value for a in model.arch_variables]
    xi = model.unrolled_step_size(xi)
    weights = [w.value for w in model.weight_variables]
    with tf.GradientTape() as step_tape:
        if record_alpha:
            step_tape.watch(arch)
        w_prime, clip = model.virtual_step(weights, arch, train_batch, xi)
    w_prime_values = [tf.stop_gradient(w) for w in w_prime]
    with tf.GradientTape() as tape:
        tape.watch(w_prime_values)
        tape.watch(arch)
        loss, outputs = model.loss_at(w_prime_values, arch, val_batch, VALIDATION)
    d_all = replica_mean(tape.gradient(loss, w_prime_values + list(arch), unconnected_gradients=ZERO))
    return Unrolled(weights, arch, xi, clip, w_prime, step_tape, d_all[: len(w_prime)], d_all[len(w_prime):], loss,
                    outputs)


def train_alpha_gradient(model, weights, arch, train_batch) -> List[tf.Tensor]:
    """grad_alpha L_train(weights, alpha)."""
    with tf.GradientTape() as tape:
        tape.watch(arch)
        loss, _ = model.loss_at(weights, arch, train_batch, TRAIN)
    return tape.gradient(loss, arch, unconnected_gradients=ZERO)


def exact_gradient(model, train_batch, val_batch, xi=None):
    """Eq. 6 differentiated exactly, which by the chain rule is eq. 7 with its Hessian term taken without approximation:

        grad_alpha L_val(w', alpha) - xi * c * grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha),

    w' = ``unroll``'s virtual step; the second term is (dw'/dalpha)^T grad_w' L_val, computed by the variant that
    ``exact_variant`` picks from the config's exact_hvp and exact_recompute.
    """
    variant = exact_variant(model.bilevel)
    u = unroll(model, train_batch, val_batch, xi, record_alpha=variant is exact_by_kept_tape)
    return variant(model, u, train_batch), u.loss, u.outputs


def exact_variant(config: BilevelConfig):
    """The exact mode's Hessian term: forward over reverse, or reverse over reverse through the virtual step recomputed
    (the default: less memory) or recorded by ``unroll`` (faster)."""
    if config.exact_hvp == "forward":
        return exact_by_forward_over_reverse
    return exact_by_recompute if config.exact_recompute else exact_by_kept_tape


def exact_by_kept_tape(model, u: Unrolled, train_batch) -> List[tf.Tensor]:
    """grad_alpha L_val + (dw'/dalpha)^T grad_w' L_val through the virtual step that ``unroll`` recorded (reverse over
    reverse); the validation pass stays out of the second-order graph."""
    through_w = replica_mean(u.step_tape.gradient(u.w_prime, u.arch, output_gradients=u.d_w,
                                                  unconnected_gradients=ZERO))
    return [da + dt for da, dt in zip(u.d_alpha, through_w)]


def exact_by_recompute(model, u: Unrolled, train_batch) -> List[tf.Tensor]:
    """The same through the virtual step recomputed under a tape once the validation pass is done. Bit-identical to
    the kept tape: ``loss_at`` uses the same BatchNorm batch statistics and dropout seeds every time."""
    weights = _after_validation_pass(u)
    with tf.GradientTape() as tape:
        tape.watch(u.arch)
        w_prime, _ = model.virtual_step(weights, u.arch, train_batch, u.xi)
    through_w = replica_mean(tape.gradient(w_prime, u.arch, output_gradients=u.d_w, unconnected_gradients=ZERO))
    return [da + dt for da, dt in zip(u.d_alpha, through_w)]


def exact_by_forward_over_reverse(model, u: Unrolled, train_batch) -> List[tf.Tensor]:
    """grad_alpha L_val - xi * c * grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val, the Hessian-vector product by
    ``alpha_hessian_vector_product``."""
    if replicas_in_step() > 1:
        raise ValueError(f"exact_hvp='forward' is not available under a distribution strategy of "
                         f"{replicas_in_step()} replicas: TensorFlow's forward-mode autodiff does not go through the "
                         f"replicas' all-reduces (synchronised BatchNorm) correctly. Use exact_hvp='reverse' (the "
                         f"default) or --strategy=default.")
    hvp = replica_mean(model.alpha_hessian_vector_product(_after_validation_pass(u), u.arch, train_batch, u.d_w))
    return [da - tf.cast(u.xi, da.dtype) * tf.cast(u.clip, da.dtype) * h for da, h in zip(u.d_alpha, hvp)]


def _after_validation_pass(u: Unrolled) -> List[tf.Tensor]:
    """w, available only once grad_w' L_val is: the train pass of the Hessian term is (re)computed after the validation
    pass (control dependency), so that its activations and the validation pass's are never held at the same time."""
    with tf.control_dependencies(u.d_w):
        return [tf.identity(w) for w in u.weights]


def finite_difference_gradient(model, train_batch, val_batch, xi=None):
    """Eq. 7 with the Hessian-vector product by the central difference of eq. 8:

        grad_alpha L_val(w', alpha) - xi * c * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)

    with w+- = w +- eps * grad_w' L_val(w', alpha), eps = fd_epsilon / ||grad_w' L_val(w', alpha)|| (paper footnote 2),
    and c the virtual step's clip coefficient (``unroll``).
    """
    u = unroll(model, train_batch, val_batch, xi)
    eps = model.bilevel.fd_epsilon / (tf.linalg.global_norm(u.d_w) + 1e-12)

    def train_alpha_gradient_at(sign):  # at w+ (sign 1) or w- (sign -1)
        shifted = [w + sign * tf.cast(eps, w.dtype) * d for w, d in zip(u.weights, u.d_w)]
        return replica_mean(train_alpha_gradient(model, shifted, u.arch, train_batch))

    g_plus = train_alpha_gradient_at(1.0)
    with tf.control_dependencies(g_plus):  # one after the other: two passes at once would double the peak memory
        g_minus = train_alpha_gradient_at(-1.0)
    grads = [da - tf.cast(u.xi, da.dtype) * tf.cast(u.clip, da.dtype) * (gp - gm) / (2.0 * tf.cast(eps, da.dtype))
             for da, gp, gm in zip(u.d_alpha, g_plus, g_minus)]
    return grads, u.loss, u.outputs


ARCH_GRADIENTS = {
    "first_order": first_order_gradient,
    "second_order_exact": exact_gradient,
    "second_order_fd": finite_difference_gradient,
}
