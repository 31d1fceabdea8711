"""The health of an architecture search, epoch by epoch: what DARTS+ (Liang et al. 2019) and RobustDARTS (Zela et al.
2020) watch to tell a search that is converging from one that is collapsing into skip-connections.

Per cell type (CNN ``normal`` / ``reduce``, RNN ``recurrent``, NAS-Bench-201 ``cell``), from the alphas and the
genotype they derive:

* ``skip_connects/<cell>``: the parameter-free shortcuts in the derived cell ('skip_connect'; the recurrent space's
  'identity');
* ``entropy/<cell>``, ``max_weight/<cell>``: the mean over edges of the entropy (nats) of softmax(alpha[e]) and of its
  largest weight: log(#ops) and 1/#ops at the uniform start, 0 and 1 for an edge that has decided;
* ``genotype_changes/<cell>`` (and ``genotype_changes``, their sum): how many chosen (op, input) edges of the derived
  cell differ from the previous epoch's.

And, when asked, ``hessian_eigenvalue``: the dominant eigenvalue of the Hessian of L_val w.r.t. alpha
(``dominant_hessian_eigenvalue``, power iteration on Hessian-vector products), whose rise RobustDARTS stops on.

A caveat measured here (TensorFlow 2.21, CPU): the second derivative through max pooling is not reproducible while
other ops run concurrently (inter-op parallelism > 1): the same Hessian-vector product of a supernet with
max_pool_3x3 and a convolution differs from call to call, by up to a third of its size, and the products stop being
symmetric; without max pooling, or with one inter-op thread
(``tf.config.threading.set_inter_op_parallelism_threads(1)`` before TensorFlow starts), they are exact to round-off.
The eigenvalue of a search over max_pool_3x3 is then an estimate with that noise (RobustDARTS' rule averages it over
epochs).

States are named as in the genotypes: a CNN cell's inputs ``c_{k-2}``, ``c_{k-1}`` (states 0, 1) and its nodes
``n2``, ``n3``, ...; a recurrent cell's nodes ``n0`` (from x_t and h_{t-1}), ``n1``, ...; an edge is ``n3 <- c_{k-1}``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from darts_tf import genotypes as gt
from darts_tf.bilevel import VALIDATION, ZERO

SKIP_OPS = ("skip_connect", "identity")  # the parameter-free shortcut of the CNN and of the recurrent space
# the cell type of each alpha; any other (single) alpha is the recurrent cell. NAS-Bench-201's one alpha is 'cell'.
CELLS = {"alpha_normal": "normal", "alpha_reduce": "reduce", gt.NB201_ALPHA: "cell"}
# NAS-Bench-201's cell laid out as the health views need it: node 0 is the input, every edge kept (so a genotype
# change is counted per edge)
_NB201_LAYOUT = gt._EdgeSpace(num_inputs=1, edges_per_node=1, ops=gt.NB201_PRIMITIVES)

# absl flag metadata of the search configs' health fields (``darts_tf.cli.common.define_flags_from_dataclass``)
HEALTH_FLAG_METADATA = {
    "hessian_eigenvalue": {"help": "Compute the dominant eigenvalue of the Hessian of the validation loss w.r.t. alpha "
                                   "after every epoch (power iteration on Hessian-vector products of one fixed "
                                   "validation batch; TensorBoard health/hessian_eigenvalue, metrics.json). Off by "
                                   "default: each power iteration costs about half a search step (at most "
                                   "--hessian_iterations per epoch). --early_stop=robust_darts turns it on."},
    "hessian_iterations": {"help": "Most power iterations for --hessian_eigenvalue (each one Hessian-vector product); "
                                   "it stops earlier once the estimate changes by less than 1e-3 of itself."},
}


def op_alphas(alphas: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The alphas over candidate ops of `alphas` (as ``alphas_numpy()``): without the edge weights of PC-DARTS' edge
    normalisation (``genotypes.EDGE_BETA_NAMES``), which weigh whole edges, not ops."""
    return {k: v for k, v in alphas.items() if k not in gt.EDGE_BETA_NAMES}


def cell_of(alpha_name: str) -> str:
    """The cell type an alpha belongs to: 'normal', 'reduce' or 'recurrent'."""
    return CELLS.get(alpha_name, "recurrent")


def _space(cell: str):
    return {"recurrent": gt.RNN_SPACE, "cell": _NB201_LAYOUT}.get(cell, gt.CNN_SPACE)


def steps_of(num_edges: int, cell: str) -> int:
    """The intermediate nodes of a cell with `num_edges` searched edges."""
    inputs, steps, total = _space(cell).num_inputs, 0, 0
    while total < num_edges:
        total += inputs + steps
        steps += 1
    if total != num_edges:
        raise ValueError(f"{num_edges} edges is not the edge count of any {cell} cell. Received: num_edges={num_edges}")
    return steps


def state_name(state: int, cell: str) -> str:
    """A state of a cell by its index in the genotype: c_{k-2}, c_{k-1}, n2, ... (CNN); n0, n1, ... (RNN, and
    NAS-Bench-201's cell, whose n0 is the cell input)."""
    if cell in ("normal", "reduce") and state < 2:
        return ("c_{k-2}", "c_{k-1}")[state]
    return f"n{state}"


def edge_names(num_edges: int, cell: str, sep: str = " <- ") -> List[str]:
    """'node <- input' of every searched edge of a cell, in the alpha's row order."""
    inputs = _space(cell).num_inputs
    names = []
    for node in range(steps_of(num_edges, cell)):
        target = state_name(inputs + node, cell)
        names += [f"{target}{sep}{state_name(j, cell)}" for j in range(inputs + node)]
    return names


def softmax(alpha: np.ndarray) -> np.ndarray:
    """softmax over the last axis, in float64."""
    x = np.asarray(alpha, np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def edge_entropy(alpha: np.ndarray) -> np.ndarray:
    """H(softmax(alpha[e])) in nats for every edge e."""
    p = softmax(alpha)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def cell_edges(genotype: gt.AnyGenotype) -> Dict[str, Tuple[gt.Edge, ...]]:
    """The chosen (op, input) edges of each cell type of a genotype."""
    if isinstance(genotype, gt.Genotype):
        return {"normal": tuple(genotype.normal), "reduce": tuple(genotype.reduce)}
    if isinstance(genotype, gt.NB201Genotype):
        return {"cell": genotype.edges}
    return {"recurrent": tuple(genotype.recurrent)}


def _by_node(edges: Sequence[gt.Edge], cell: str) -> List[set]:
    per_node = _space(cell).edges_per_node
    return [set(map(tuple, edges[i:i + per_node])) for i in range(0, len(edges), per_node)]


def genotype_changes(genotype: gt.AnyGenotype, previous: Optional[gt.AnyGenotype]) -> Dict[str, int]:
    """Per cell type, the chosen (op, input) edges of `genotype` that `previous` did not choose for the same node (the
    order in which a node's two edges are listed does not count). Without `previous`, no counts."""
    if previous is None:
        return {}
    old = cell_edges(previous)
    changes = {}
    for cell, edges in cell_edges(genotype).items():
        before = _by_node(old.get(cell, ()), cell)
        now = _by_node(edges, cell)
        changes[cell] = sum(len(n - (before[i] if i < len(before) else set())) for i, n in enumerate(now))
    return changes


@dataclasses.dataclass(frozen=True)
class ArchitectureHealth:
    """One epoch's health: `scalars` by metrics.json key (see the module docstring); `per_edge` per cell type:
    {'entropy': [edges], 'max_weight': [edges], 'weights': softmax(alpha) [edges, ops]}."""

    scalars: Dict[str, float]
    per_edge: Dict[str, Dict[str, np.ndarray]]


def architecture_health(alphas: Mapping[str, np.ndarray], genotype: gt.AnyGenotype,
                        previous: Optional[gt.AnyGenotype] = None) -> ArchitectureHealth:
    """The health scalars of an epoch from its alphas (by name, as ``alphas_numpy()``), the genotype they derive and
    the previous epoch's genotype (None: no genotype change is counted)."""
    scalars: Dict[str, float] = {}
    per_edge: Dict[str, Dict[str, np.ndarray]] = {}
    for name, alpha in op_alphas(alphas).items():
        cell = cell_of(name)
        weights = softmax(alpha)
        entropy, max_weight = edge_entropy(alpha), weights.max(axis=-1)
        per_edge[cell] = {"entropy": entropy, "max_weight": max_weight, "weights": weights}
        scalars[f"entropy/{cell}"] = float(entropy.mean())
        scalars[f"max_weight/{cell}"] = float(max_weight.mean())
    for cell, edges in cell_edges(genotype).items():
        scalars[f"skip_connects/{cell}"] = float(sum(op in SKIP_OPS for op, _ in edges))
    changes = genotype_changes(genotype, previous)
    for cell, n in changes.items():
        scalars[f"genotype_changes/{cell}"] = float(n)
    if changes:
        scalars["genotype_changes"] = float(sum(changes.values()))
    return ArchitectureHealth(scalars, per_edge)


# --------------------------------------------------------------------------------------------------------------------
# The dominant eigenvalue of the Hessian of L_val w.r.t. alpha (Zela et al. 2020, sect. 4).

@dataclasses.dataclass(frozen=True)
class PowerIteration:
    """The estimate of the dominant eigenvalue, the Hessian-vector products it took, whether it met the tolerance."""

    eigenvalue: float
    iterations: int
    converged: bool


def _dot(a: Sequence[tf.Tensor], b: Sequence[tf.Tensor]) -> float:
    return float(sum(np.vdot(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in zip(a, b)))


def power_iteration(hvp: Callable[[List[tf.Tensor]], Sequence[tf.Tensor]], start: Sequence[Any],
                    iterations: int = 20, tol: float = 1e-3) -> PowerIteration:
    """The eigenvalue of largest magnitude of the symmetric operator `hvp` (a list of tensors -> H times it), by power
    iteration from `start`: v <- Hv / ||Hv||, estimate v.Hv (the Rayleigh quotient, so the sign is kept); stops when
    the estimate moves by less than `tol` times its magnitude, or after `iterations` products."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1. Received: iterations={iterations}")
    norm = np.sqrt(_dot(start, start))
    if norm == 0:
        raise ValueError("The start vector of the power iteration is zero.")
    v = [tf.convert_to_tensor((np.asarray(x) / norm).astype(np.asarray(x).dtype)) for x in start]
    estimate = None
    for i in range(1, iterations + 1):
        hv = [tf.cast(h, x.dtype) for h, x in zip(hvp(v), v)]
        new = _dot(v, hv)
        hv_norm = np.sqrt(_dot(hv, hv))
        if hv_norm == 0:
            return PowerIteration(0.0, i, True)
        if estimate is not None and abs(new - estimate) <= tol * abs(new):
            return PowerIteration(new, i, True)
        estimate = new
        v = [h / tf.cast(hv_norm, h.dtype) for h in hv]
    return PowerIteration(float(estimate), iterations, False)


def validation_hvp(model) -> Callable[..., List[tf.Tensor]]:
    """(weights, alpha, batch, vector) -> grad^2_alpha L_val(w, alpha) . vector for a compiled `BilevelSearchModel`,
    reverse over reverse (nested tapes) on ``model.loss_at`` (``stateless_call``: no variable, BatchNorm statistic or
    RNG state moves, so every product sees the same function). One ``tf.function``, traced once per model."""

    @tf.function(reduce_retracing=True)
    def hvp(weights, arch, batch, vector):
        with tf.GradientTape() as outer:
            outer.watch(arch)
            with tf.GradientTape() as inner:
                inner.watch(arch)
                loss, _ = model.loss_at(weights, arch, batch, VALIDATION)
            grads = inner.gradient(loss, arch, unconnected_gradients=ZERO)
            along = tf.add_n([tf.reduce_sum(g * tf.cast(v, g.dtype)) for g, v in zip(grads, vector)])
        return outer.gradient(along, arch, unconnected_gradients=ZERO)

    return hvp


class HessianEigenvalue:
    """The dominant eigenvalue of the Hessian of L_val w.r.t. alpha on one validation `batch`, at the model's current
    weights and alphas (call it after each epoch). The power iteration starts from the same random unit vector every
    time (`seed`), so estimates of different epochs differ by the model only."""

    def __init__(self, model, batch, iterations: int = 20, tol: float = 1e-3, seed: int = 0):
        self.model, self.batch, self.iterations, self.tol = model, batch, int(iterations), float(tol)
        self._hvp = validation_hvp(model)
        rng = np.random.default_rng(seed)
        self._start = [rng.standard_normal(tuple(a.shape)).astype(a.dtype) for a in model.arch_variables]
        self.last_seconds = 0.0

    def __call__(self) -> PowerIteration:
        start_time = time.perf_counter()
        weights = [w.value for w in self.model.weight_variables]
        arch = [a.value for a in self.model.arch_variables]
        result = power_iteration(lambda v: self._hvp(weights, arch, self.batch, v), self._start, self.iterations,
                                 self.tol)
        self.last_seconds = time.perf_counter() - start_time
        return result


def dominant_hessian_eigenvalue(model, batch, iterations: int = 20, tol: float = 1e-3, seed: int = 0) -> float:
    """lambda_max of grad^2_alpha L_val(w, alpha) on `batch` (a validation batch as ``train_step`` takes it) for a
    compiled `BilevelSearchModel`, by ``power_iteration`` on Hessian-vector products (eigenvalue of largest
    magnitude, sign kept)."""
    return HessianEigenvalue(model, batch, iterations, tol, seed)().eigenvalue
