"""The bilevel architecture search step shared by the CNN and RNN search networks (paper sect. 2.3).

``BilevelSearchModel.train_step`` takes ``{'train': batch, 'validation': batch}`` (the tunas
``_merge_datasets`` layout) and does, in order:

1. the architecture step on the validation batch: alpha <- Adam(grad_alpha L_val + wd_alpha * alpha),
   where grad_alpha is one of
     * ``first_order``: grad_alpha L_val(w, alpha)  (xi = 0, eq. 5 with xi = 0);
     * ``second_order_exact``: grad_alpha L_val(w', alpha) with w' = w - xi * (momentum * buf + grad_w L_train + wd * w)
       differentiated *through* w' by nested ``tf.GradientTape`` (eq. 6 exactly, Hessian term included); the network
       is evaluated at w' with Keras 3 ``stateless_call``, no variable is mutated;
     * ``second_order_fd``: eq. 7-8, the Hessian-vector product by a central finite difference with
       eps = 0.01 / ||grad_w' L_val(w', alpha)||.
2. the weight step on the train batch: w <- SGD-momentum(clip(grad_w L_train) + wd * w).

Weight decay is added to the gradient (PyTorch semantics, as the reference) rather than decoupled.
Subclasses provide the network (``call``), ``arch_variables`` and how a batch becomes inputs and a loss.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from darts_tf.numerics import at_least_float32

ARCH_MODES = ("first_order", "second_order_exact", "second_order_fd")
TRAIN, VALIDATION = "train", "validation"
EXACT_HVP_METHODS = ("reverse", "forward")


def check_arch_mode(mode: str) -> str:
    if mode not in ARCH_MODES:
        raise ValueError(f"Unknown architecture-gradient mode {mode!r}. Known: {', '.join(ARCH_MODES)}.")
    return mode


def _zeros_for_none(grads, variables):
    return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]


class BilevelSearchModel(keras.Model):
    """A supernet whose trainable variables are the weights w plus the architecture variables alpha.

    Subclasses must create their alphas with ``add_weight(trainable=True)``, list them in ``arch_variables``, and
    may override ``search_inputs``, ``search_loss``, ``search_accuracy`` and ``update_stream_state``.
    Use ``compile(optimizer=<weights' SGD>, arch_optimizer=<alphas' Adam>)``; the model must be built first.
    """

    def __init__(self, arch_mode: str = "first_order", xi: Optional[float] = None, weight_decay: float = 3e-4,
                 arch_weight_decay: float = 1e-3, grad_clip: float = 5.0,
                 fd_epsilon: float = 0.01, unrolled_grad_clip: Optional[float] = None, exact_recompute: bool = True,
                 exact_hvp: str = "reverse", **kwargs):
        super().__init__(**kwargs)
        self.arch_mode = check_arch_mode(arch_mode)
        if xi is not None and xi < 0:
            raise ValueError(f"xi must be >= 0 (the unrolled step size). Received: xi={xi}")
        self.xi = xi
        self.weight_decay = float(weight_decay)
        self.arch_weight_decay = float(arch_weight_decay)
        self.grad_clip = grad_clip
        if fd_epsilon <= 0:
            raise ValueError(f"fd_epsilon must be > 0 (eps = fd_epsilon / ||grad_w' L_val||). Received: {fd_epsilon}")
        self.fd_epsilon = float(fd_epsilon)
        # The reference's RNN architect clips grad_w L_train to the weights' clip norm before the virtual step
        # (lr 20 would otherwise throw w' far away); the CNN architect does not clip (None).
        self.unrolled_grad_clip = unrolled_grad_clip
        # exact mode: recompute the virtual step's pass for the Hessian term instead of keeping it through the
        # validation pass (one more forward/backward of the train batch, much lower peak memory; see benchmarks/)
        self.exact_recompute = bool(exact_recompute)
        # exact mode: the Hessian term by differentiating the virtual step ("reverse": reverse over reverse) or by
        # ``alpha_hessian_vector_product`` ("forward": forward over reverse); equal up to round-off
        if exact_hvp not in EXACT_HVP_METHODS:
            raise ValueError(f"exact_hvp must be one of {EXACT_HVP_METHODS}. Received: exact_hvp={exact_hvp!r}")
        if exact_hvp == "forward" and not self.supports_forward_hvp:
            raise ValueError(f"exact_hvp='forward' is not available for {type(self).__name__}: TensorFlow's forward-mode "
                             f"autodiff does not go through its time loop. Use exact_hvp='reverse' (the default).")
        self.exact_hvp = exact_hvp
        self.arch_optimizer = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.val_loss_tracker = keras.metrics.Mean(name="val_loss")
        self.acc_tracker = keras.metrics.Mean(name="accuracy")
        self.val_acc_tracker = keras.metrics.Mean(name="val_accuracy")

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

    supports_forward_hvp = True  # False where tf.autodiff.ForwardAccumulator cannot run the network (RNN loop)
    reports_accuracy = True  # False for networks without an accuracy (language models): only losses are logged

    @property
    def metrics(self):
        if not self.reports_accuracy:
            return [self.loss_tracker, self.val_loss_tracker]
        return [self.loss_tracker, self.acc_tracker, self.val_loss_tracker, self.val_acc_tracker]

    def current_learning_rate(self):
        return tf.cast(self.optimizer.learning_rate, tf.float32)

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
        """L(w, alpha) on `batch` for the given values, through ``stateless_call`` (no variable changes)."""
        non_trainable = [v.value for v in self.non_trainable_variables]
        outputs, _ = self.stateless_call(self._values(weight_values, arch_values), non_trainable,
                                         self.search_inputs(batch, stream), training=True)
        return self.search_loss(batch, outputs, stream), outputs

    def unrolled_clip_coefficient(self, grads) -> tf.Tensor:
        """min(1, clip / ||grad||) for the virtual step (1 without `unrolled_grad_clip`); a constant for autodiff,
        as the reference computes it on detached gradients."""
        if not self.unrolled_grad_clip:
            return tf.constant(1.0, grads[0].dtype)
        norm = tf.linalg.global_norm(grads)
        return tf.stop_gradient(tf.minimum(tf.cast(1.0, norm.dtype), self.unrolled_grad_clip / (norm + 1e-6)))

    def unrolled_weights(self, weights, grads, xi) -> List[tf.Tensor]:
        """w' = w - xi * (momentum * buf + grad + wd * w): one virtual step of the weight optimizer (eq. 6)."""
        return [w + m - xi * (g + self.weight_decay * w) for w, g, m in zip(weights, grads, self._momentum_terms(weights))]

    def virtual_step(self, weights, arch, train_batch, xi) -> Tuple[List[tf.Tensor], tf.Tensor]:
        """(w', clip coefficient): w' = w - xi * (momentum * buf + c * grad_w L_train(w, alpha) + wd * w).

        An enclosing tape that watches alpha records the inner gradient too, which is what makes the exact mode exact.
        """
        with tf.GradientTape() as inner:
            inner.watch(weights)
            train_loss, _ = self.loss_at(weights, arch, train_batch, TRAIN)
        g = inner.gradient(train_loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
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
            with tf.GradientTape() as tape:
                tape.watch(arch)
                loss, _ = self.loss_at(weights, arch, train_batch, TRAIN)
            grads = tape.gradient(loss, arch, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    # ----------------------------------------------------------------- the architecture gradient
    def unrolled_alpha_gradient(self, train_batch, val_batch, mode: Optional[str] = None,
                                xi: Optional[tf.Tensor] = None) -> Tuple[List[tf.Tensor], tf.Tensor, Any]:
        """grad_alpha of the validation loss for `mode`; returns (grads, L_val, validation outputs)."""
        mode = check_arch_mode(mode or self.arch_mode)
        arch = [a.value for a in self.arch_variables]
        if mode == "first_order":
            with tf.GradientTape() as tape:
                tape.watch(arch)
                outputs = self(self.search_inputs(val_batch, VALIDATION), training=True)
                loss = self.search_loss(val_batch, outputs, VALIDATION)
            grads = tape.gradient(loss, arch, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return grads, loss, outputs

        if xi is None:
            xi = self.current_learning_rate() if self.xi is None else tf.constant(self.xi, tf.float32)
        weights = [w.value for w in self.weight_variables]
        exact = mode == "second_order_exact"
        # 1. the virtual step w' = w - xi * (... + c * grad_w L_train(w, alpha)); in the exact mode `outer` (watching
        #    alpha) records it, inner gradient included, so that dw'/dalpha can be taken through it in step 3.
        keep_tape = exact and not self.exact_recompute and self.exact_hvp == "reverse"
        with tf.GradientTape() as outer:
            if keep_tape:  # a tape that watches nothing records nothing
                outer.watch(arch)
            w_prime, clip = self.virtual_step(weights, arch, train_batch, xi)
        # 2. L_val(w', alpha) and its gradients at w' (grad_w' and the direct grad_alpha); w' is a constant here.
        w_prime_values = [tf.stop_gradient(w) for w in w_prime]
        with tf.GradientTape() as tape:
            tape.watch(w_prime_values)
            tape.watch(arch)
            loss, outputs = self.loss_at(w_prime_values, arch, val_batch, VALIDATION)
        d_all = tape.gradient(loss, w_prime_values + list(arch), unconnected_gradients=tf.UnconnectedGradients.ZERO)
        d_w, d_alpha = d_all[: len(w_prime)], d_all[len(w_prime):]
        # 3. + (dw'/dalpha)^T grad_w' L_val = - xi * c * grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val (eq. 7)
        if exact and not keep_tape:
            # the train pass of the Hessian term is (re)computed only once the validation pass is done (control
            # dependency), so that its activations and the validation pass's are never held at the same time
            with tf.control_dependencies(d_w):
                weights = [tf.identity(w) for w in weights]
        if exact and self.exact_hvp == "forward":
            hvp = self.alpha_hessian_vector_product(weights, arch, train_batch, d_w)
            return [da - tf.cast(xi, da.dtype) * tf.cast(clip, da.dtype) * h for da, h in zip(d_alpha, hvp)], loss, outputs
        if exact:
            # exactly, by differentiating the recorded virtual step (reverse over reverse); by the chain rule this is
            # grad_alpha L_val(w'(alpha), alpha) (eq. 6), with the validation pass kept out of the second-order graph
            if not keep_tape:
                # recompute the virtual step under a tape (after the validation pass, ordered above). Bit-identical:
                # loss_at uses the same BatchNorm batch statistics and dropout seeds every time.
                with tf.GradientTape() as outer:
                    outer.watch(arch)
                    w_prime, _ = self.virtual_step(weights, arch, train_batch, xi)
            through_w = outer.gradient(w_prime, arch, output_gradients=d_w,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [da + dt for da, dt in zip(d_alpha, through_w)], loss, outputs
        # by the central finite difference of eq. 8, eps = fd_epsilon / ||grad_w' L_val||
        eps = self.fd_epsilon / (tf.linalg.global_norm(d_w) + 1e-12)

        def train_alpha_grad(sign):
            shifted = [w + sign * tf.cast(eps, w.dtype) * d for w, d in zip(weights, d_w)]
            with tf.GradientTape() as t:
                t.watch(arch)
                l, _ = self.loss_at(shifted, arch, train_batch, TRAIN)
            return t.gradient(l, arch, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        g_plus = train_alpha_grad(1.0)
        with tf.control_dependencies(g_plus):  # one after the other: two passes at once would double the peak memory
            g_minus = train_alpha_grad(-1.0)
        grads = [da - tf.cast(xi, da.dtype) * tf.cast(clip, da.dtype) * (gp - gm) / (2.0 * tf.cast(eps, da.dtype))
                 for da, gp, gm in zip(d_alpha, g_plus, g_minus)]
        return grads, loss, outputs

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
        # 1. architecture step on the validation batch
        alpha_grads, val_loss, val_outputs = self.unrolled_alpha_gradient(train_batch, val_batch)
        self.update_stream_state(val_outputs, VALIDATION)
        alpha_grads = [g + self.arch_weight_decay * a for g, a in zip(alpha_grads, self.arch_variables)]
        self.arch_optimizer.apply(alpha_grads, self.arch_variables)
        # 2. weight step on the train batch
        weights = self.weight_variables
        with tf.GradientTape() as tape:
            outputs = self(self.search_inputs(train_batch, TRAIN), training=True)
            loss = self.search_loss(train_batch, outputs, TRAIN)
        grads = _zeros_for_none(tape.gradient(loss, weights), weights)
        if self.grad_clip:
            grads, _ = tf.clip_by_global_norm(grads, self.grad_clip)
        grads = [g + self.weight_decay * w for g, w in zip(grads, weights)]
        lr = self.current_learning_rate()
        self.optimizer.apply(grads, weights)
        self.update_stream_state(outputs, TRAIN)
        self._track(train_batch, outputs, loss, val_batch, val_outputs, val_loss)
        logs = {m.name: m.result() for m in self.metrics}
        logs["lr"] = lr
        return logs

    def _track(self, train_batch, outputs, loss, val_batch, val_outputs, val_loss):
        self.loss_tracker.update_state(loss)
        self.val_loss_tracker.update_state(val_loss)
        acc = self.search_accuracy(train_batch, outputs)
        if acc is not None:
            self.acc_tracker.update_state(acc)
            self.val_acc_tracker.update_state(self.search_accuracy(val_batch, val_outputs))

    def test_step(self, data):
        batch = data[VALIDATION] if isinstance(data, dict) else data
        outputs = self(self.search_inputs(batch, VALIDATION), training=False)
        loss = self.search_loss(batch, outputs, VALIDATION)
        self.loss_tracker.update_state(loss)
        acc = self.search_accuracy(batch, outputs)
        if acc is not None:
            self.acc_tracker.update_state(acc)
        logs = {"loss": self.loss_tracker.result()}
        if self.reports_accuracy:
            logs["accuracy"] = self.acc_tracker.result()
        return logs
