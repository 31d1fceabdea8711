"""Discrete cell architectures (genotypes): the published cells, validation,
JSON files, and derivation from architecture weights alpha (paper sect. 2.4).

One mechanism serves both search spaces:

* CNN (`Genotype`): 2 cell inputs (states 0, 1), each intermediate node takes
  2 edges; ``derive_genotype(alpha, k=2)``.
* RNN (`RecurrentGenotype`): 1 input state (state 0, the highway node built
  from ``[x_t, h_{t-1}]``), each node takes 1 edge; ``derive_genotype(alpha, k=1)``.

An edge is ``(op_name, predecessor_state_index)``. A genotype file is JSON::

    {"kind": "cnn", "normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5],
     "reduce": [...], "reduce_concat": [...]}
    {"kind": "rnn", "recurrent": [["sigmoid", 0], ...], "concat": [1, ..., 8]}

and may carry a free-form ``"metadata"`` object (lineage) that is not part of
the genotype's identity.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from darts_tf.io_utils import atomic_write_text  # noqa: F401  (re-exported for callers)

CNN_PRIMITIVES: Tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# Ops that only the NASNet / AmoebaNet baselines use; valid in a genotype, not searched over.
CNN_EXTRA_OPS: Tuple[str, ...] = ("sep_conv_7x7", "conv_7x1_1x7")
RNN_PRIMITIVES: Tuple[str, ...] = ("none", "tanh", "relu", "sigmoid", "identity")

CNN_STEPS = 4  # intermediate nodes of a searched CNN cell
RNN_STEPS = 8  # intermediate nodes of a searched RNN cell

Edge = Tuple[str, int]


class GenotypeError(ValueError):
    """A genotype (or genotype file) that does not describe a valid cell."""


@dataclasses.dataclass(frozen=True)
class _EdgeSpace:
    """How edges are laid out in one kind of cell (the shared validation/derivation rules)."""

    num_inputs: int  # states before the first intermediate node
    edges_per_node: int
    ops: Tuple[str, ...]  # ops allowed in a genotype

    def num_edges(self, steps: int) -> int:
        """Mixed edges of a search cell with `steps` nodes (14 for CNN, 36 for RNN)."""
        return sum(self.num_inputs + i for i in range(steps))


CNN_SPACE = _EdgeSpace(num_inputs=2, edges_per_node=2, ops=CNN_PRIMITIVES + CNN_EXTRA_OPS)
RNN_SPACE = _EdgeSpace(num_inputs=1, edges_per_node=1, ops=RNN_PRIMITIVES)


def _validate_edges(field: str, edges: Sequence[Edge], concat: Sequence[int], space: _EdgeSpace) -> None:
    if not isinstance(edges, (list, tuple)) or not edges:
        raise GenotypeError(f"Genotype field '{field}' must be a non-empty list of [op, predecessor] pairs. Received: {edges!r}")
    if len(edges) % space.edges_per_node:
        raise GenotypeError(
            f"Genotype field '{field}' has {len(edges)} edges; it needs {space.edges_per_node} edges per node "
            f"(a multiple of {space.edges_per_node})."
        )
    steps = len(edges) // space.edges_per_node
    for position, edge in enumerate(edges):
        if not (isinstance(edge, (list, tuple)) and len(edge) == 2):
            raise GenotypeError(f"Genotype field '{field}'[{position}] must be an [op, predecessor] pair. Received: {edge!r}")
        op, pred = edge
        if op not in space.ops or op == "none":
            raise GenotypeError(
                f"Genotype field '{field}'[{position}] uses unknown op {op!r}. Known ops: {', '.join(o for o in space.ops if o != 'none')}."
            )
        node = position // space.edges_per_node
        highest = space.num_inputs + node - 1  # a node may read any earlier state
        if isinstance(pred, bool) or not isinstance(pred, (int, np.integer)) or not 0 <= pred <= highest:
            raise GenotypeError(
                f"Genotype field '{field}'[{position}] has predecessor {pred!r} out of range: node {node} may only "
                f"take states 0..{highest}."
            )
    num_states = space.num_inputs + steps
    if not isinstance(concat, (list, tuple)) or not concat:
        raise GenotypeError(f"Genotype concat for '{field}' must be a non-empty list of state indices. Received: {concat!r}")
    for index in concat:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not space.num_inputs <= index < num_states:
            raise GenotypeError(
                f"Genotype concat for '{field}' has state {index!r} out of range {space.num_inputs}..{num_states - 1} "
                f"(a cell with {steps} nodes)."
            )
    if len(set(concat)) != len(concat):
        raise GenotypeError(f"Genotype concat for '{field}' repeats a state: {list(concat)}.")


def _edges(value) -> Tuple[Edge, ...]:
    return tuple((op, int(pred)) if isinstance(pred, (int, np.integer)) and not isinstance(pred, bool) else (op, pred) for op, pred in value)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A convolutional cell pair (normal and reduction), as in the reference's genotypes.py."""

    normal: Tuple[Edge, ...]
    normal_concat: Tuple[int, ...]
    reduce: Tuple[Edge, ...]
    reduce_concat: Tuple[int, ...]

    kind = "cnn"

    def __post_init__(self):
        for field in ("normal", "reduce"):
            value = getattr(self, field)
            if isinstance(value, (list, tuple)) and all(isinstance(e, (list, tuple)) and len(e) == 2 for e in value):
                object.__setattr__(self, field, _edges(value))
        for field in ("normal_concat", "reduce_concat"):
            value = getattr(self, field)
            if isinstance(value, (list, tuple, range)):
                object.__setattr__(self, field, tuple(value))
        self.validate()

    def validate(self) -> None:
        _validate_edges("normal", self.normal, self.normal_concat, CNN_SPACE)
        _validate_edges("reduce", self.reduce, self.reduce_concat, CNN_SPACE)

    @property
    def normal_steps(self) -> int:
        return len(self.normal) // 2

    @property
    def reduce_steps(self) -> int:
        return len(self.reduce) // 2

    def to_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }


@dataclasses.dataclass(frozen=True)
class RecurrentGenotype:
    """A recurrent cell: one (activation, predecessor) edge per node; output = mean of `concat` states."""

    recurrent: Tuple[Edge, ...]
    concat: Tuple[int, ...]

    kind = "rnn"

    def __post_init__(self):
        if isinstance(self.recurrent, (list, tuple)) and all(isinstance(e, (list, tuple)) and len(e) == 2 for e in self.recurrent):
            object.__setattr__(self, "recurrent", _edges(self.recurrent))
        if isinstance(self.concat, (list, tuple, range)):
            object.__setattr__(self, "concat", tuple(self.concat))
        self.validate()

    def validate(self) -> None:
        _validate_edges("recurrent", self.recurrent, self.concat, RNN_SPACE)

    @property
    def steps(self) -> int:
        return len(self.recurrent)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "recurrent": [list(e) for e in self.recurrent], "concat": list(self.concat)}


AnyGenotype = Union[Genotype, RecurrentGenotype]
_FIELDS = {"cnn": ("normal", "normal_concat", "reduce", "reduce_concat"), "rnn": ("recurrent", "concat")}
_CLASSES = {"cnn": Genotype, "rnn": RecurrentGenotype}


def genotype_from_dict(data: Dict[str, Any], kind: Optional[str] = None) -> AnyGenotype:
    """Builds a genotype from its JSON object; raises GenotypeError naming the bad field."""
    if not isinstance(data, dict):
        raise GenotypeError(f"A genotype must be a JSON object. Received: {type(data).__name__}")
    found_kind = data.get("kind") or ("rnn" if "recurrent" in data else "cnn")
    if found_kind not in _FIELDS:
        raise GenotypeError(f"Genotype field 'kind' must be 'cnn' or 'rnn'. Received: {found_kind!r}")
    if kind is not None and found_kind != kind:
        raise GenotypeError(f"Expected a {kind.upper()} genotype but the genotype has kind '{found_kind}'.")
    fields = _FIELDS[found_kind]
    missing = [f for f in fields if f not in data]
    if missing:
        raise GenotypeError(f"Genotype is missing field(s) {', '.join(repr(m) for m in missing)}; a {found_kind} genotype needs {', '.join(fields)}.")
    unknown = sorted(set(data) - set(fields) - {"kind", "metadata", "name"})
    if unknown:
        raise GenotypeError(f"Genotype has unknown field(s) {', '.join(repr(u) for u in unknown)}; a {found_kind} genotype has {', '.join(fields)}.")
    return _CLASSES[found_kind](**{f: data[f] for f in fields})


def genotype_to_json(genotype: AnyGenotype, metadata: Optional[Dict[str, Any]] = None) -> str:
    data = genotype.to_dict()
    if metadata:
        data["metadata"] = metadata
    return json.dumps(data, indent=1, sort_keys=False)


def genotype_from_json(text: str, kind: Optional[str] = None) -> AnyGenotype:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenotypeError(f"Genotype JSON does not parse: {e}") from e
    return genotype_from_dict(data, kind=kind)


def save_genotype(genotype: AnyGenotype, path: str, metadata: Optional[Dict[str, Any]] = None) -> None:
    atomic_write_text(path, genotype_to_json(genotype, metadata) + "\n")


def load_genotype_file(path: str, kind: Optional[str] = None) -> AnyGenotype:
    from darts_tf import io_utils  # local or remote (gs://, ram://) alike

    if not io_utils.isfile(path):
        raise FileNotFoundError(f"Genotype file {path!r} does not exist; pass a genotype name or the path of a genotype JSON file.")
    with io_utils.open_file(path) as f:
        text = f.read()
    try:
        return genotype_from_json(text, kind=kind)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e}") from e


def load_genotype_metadata(path: str) -> Dict[str, Any]:
    from darts_tf import io_utils

    with io_utils.open_file(path) as f:
        return json.load(f).get("metadata", {})


# --------------------------------------------------------------------------------------
# Published cells (reference genotypes.py / shared/reference/published_genotypes.json).

CNN_GENOTYPES: Dict[str, Genotype] = {
    "NASNet": Genotype(
        normal=[("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1),
                ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 1)],
        normal_concat=[2, 3, 4, 5, 6],
        reduce=[("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0), ("avg_pool_3x3", 1),
                ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2), ("sep_conv_3x3", 2), ("max_pool_3x3", 1)],
        reduce_concat=[4, 5, 6],
    ),
    "AmoebaNet": Genotype(
        normal=[("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2), ("sep_conv_3x3", 0),
                ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1), ("skip_connect", 0), ("avg_pool_3x3", 1)],
        normal_concat=[4, 5, 6],
        reduce=[("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2), ("sep_conv_7x7", 0),
                ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1), ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)],
        reduce_concat=[3, 4, 6],
    ),
    "DARTS_V1": Genotype(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1), ("skip_connect", 0),
                ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0), ("max_pool_3x3", 0),
                ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        reduce_concat=[2, 3, 4, 5],
    ),
    "DARTS_V2": Genotype(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0),
                ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        reduce_concat=[2, 3, 4, 5],
    ),
}
CNN_GENOTYPES["DARTS"] = CNN_GENOTYPES["DARTS_V2"]

RNN_GENOTYPES: Dict[str, RecurrentGenotype] = {
    "ENAS": RecurrentGenotype(
        recurrent=[("tanh", 0), ("tanh", 1), ("relu", 1), ("tanh", 3), ("tanh", 3), ("relu", 3), ("relu", 4), ("relu", 7),
                   ("relu", 8), ("relu", 8), ("relu", 8)],
        concat=[2, 5, 6, 9, 10, 11],
    ),
    "DARTS_V1": RecurrentGenotype(
        recurrent=[("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1), ("relu", 5), ("relu", 1)],
        concat=range(1, 9),
    ),
    "DARTS_V2": RecurrentGenotype(
        recurrent=[("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2), ("sigmoid", 5), ("tanh", 3), ("relu", 5)],
        concat=range(1, 9),
    ),
}
RNN_GENOTYPES["DARTS"] = RNN_GENOTYPES["DARTS_V2"]

_REGISTRY = {"cnn": CNN_GENOTYPES, "rnn": RNN_GENOTYPES}


def get_genotype(name: str, kind: str = "cnn") -> AnyGenotype:
    """A published genotype by name; the error lists the known names."""
    registry = _REGISTRY[kind]
    if name not in registry:
        raise GenotypeError(f"Unknown {kind.upper()} genotype name {name!r}. Known: {', '.join(sorted(registry))}; or pass a genotype JSON file.")
    return registry[name]


def resolve_genotype(name_or_path: str, kind: str = "cnn") -> AnyGenotype:
    """A published genotype name, or the path of a genotype JSON file (anything that exists or ends in .json)."""
    from darts_tf import io_utils

    if io_utils.exists(name_or_path) or name_or_path.endswith(".json"):
        return load_genotype_file(name_or_path, kind=kind)
    return get_genotype(name_or_path, kind)


def as_genotype(value: Union[AnyGenotype, Dict[str, Any], str], kind: str) -> AnyGenotype:
    """The `kind` ('cnn' or 'rnn') genotype that `value` is or names: a genotype, its dict (``to_dict()`` or JSON
    object), inline JSON text, a published name or the path of a genotype JSON file (``resolve_genotype``)."""
    cls = _CLASSES[kind]
    if isinstance(value, cls):
        return value
    if isinstance(value, (Genotype, RecurrentGenotype)):
        raise GenotypeError(f"Expected a {kind.upper()} genotype but the genotype has kind '{value.kind}'.")
    if isinstance(value, dict):
        return genotype_from_dict(value, kind=kind)
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return genotype_from_json(value, kind=kind)
    if isinstance(value, str) and value.strip():
        return resolve_genotype(value, kind)
    raise GenotypeError(f"genotype must be a published {kind.upper()} genotype name ({', '.join(sorted(_REGISTRY[kind]))}), "
                        f"a genotype JSON file or inline JSON, a {cls.__name__} or its dict. Received: {value!r}")


# --------------------------------------------------------------------------------------
# Derivation (paper sect. 2.4) and the random-search baseline.


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _derive_edges(alpha: np.ndarray, space: _EdgeSpace, primitives: Sequence[str], k: int,
                  excluded: Optional[np.ndarray] = None) -> Tuple[Tuple[Edge, ...], int]:
    """Per node: the k strongest predecessors, each edge ranked by its strongest non-'none' op (and not an op that
    the boolean [edges, ops] mask `excluded` rules out on that edge)."""
    edges, steps, _ = _derive_rows(alpha, space, primitives, k, excluded)
    return edges, steps


def _derive_rows(alpha, space, primitives, k, excluded=None):
    """``_derive_edges`` plus, for each chosen edge, (its alpha row, its op's softmax weight)."""
    weights = _softmax(alpha)
    if weights.ndim != 2 or weights.shape[1] != len(primitives):
        raise ValueError(f"alpha must have shape [num_edges, {len(primitives)}]. Received: {tuple(np.shape(alpha))}")
    none_index = list(primitives).index("none") if "none" in primitives else None
    steps, total = 0, 0
    while total < weights.shape[0]:
        total += space.num_inputs + steps
        steps += 1
    if total != weights.shape[0]:
        raise ValueError(f"alpha has {weights.shape[0]} rows, which is not the edge count of any cell with {space.num_inputs} inputs.")
    masked = weights.copy()
    if none_index is not None:
        masked[:, none_index] = -np.inf
    if excluded is not None:
        masked[excluded] = -np.inf
    edges: List[Edge] = []
    rows: List[Tuple[int, float]] = []
    start = 0
    for node in range(steps):
        n = space.num_inputs + node
        node_w = masked[start:start + n]
        strength = node_w.max(axis=1)
        # stable ranking: ties keep the lower predecessor index, as Python's sorted() in the reference
        chosen = sorted(range(n), key=lambda j: -strength[j])[: min(k, n)]
        for j in chosen:
            op = int(np.argmax(node_w[j]))
            edges.append((primitives[op], j))
            rows.append((start + j, float(node_w[j, op])))
        start += n
    return tuple(edges), steps, rows


SKIP = "skip_connect"


def cap_skip_connects(alpha: np.ndarray, max_skip_connects: Optional[int], primitives: Sequence[str] = CNN_PRIMITIVES,
                      k: int = 2) -> Tuple[Tuple[Edge, ...], int]:
    """The CNN cell's edges (as ``_derive_edges``) with at most `max_skip_connects` skip_connects (P-DARTS' rule for
    the normal cell; 0 or None: no cap).

    While the derived cell has more: the chosen skip_connect edge with the smallest softmax weight loses its
    skip_connect (P-DARTS zeroes that probability), so that edge now stands for its next-best non-'none' op, and
    the cell is derived again (predecessors re-ranked: the weakened edge may lose its place to another one). Each
    round rules skip_connect out on one more edge, so the cap is always reached (with no skip_connect left at
    worst); it needs a candidate other than 'none' and skip_connect.
    """
    primitives = list(primitives)
    edges, steps, rows = _derive_rows(alpha, CNN_SPACE, primitives, k)
    if not max_skip_connects or SKIP not in primitives:
        return edges, steps
    if not set(primitives) - {"none", SKIP}:
        raise ValueError(f"A skip_connect cap needs a candidate op other than 'none' and skip_connect to put in "
                         f"their place. Received: primitives={primitives}, max_skip_connects={max_skip_connects}")
    excluded = np.zeros(np.shape(alpha), bool)
    skip = primitives.index(SKIP)
    while True:
        skips = [(weight, row) for (op, _), (row, weight) in zip(edges, rows) if op == SKIP]
        if len(skips) <= max_skip_connects:
            return edges, steps
        excluded[min(skips)[1], skip] = True  # the weakest skip_connect (ties: the lower edge row)
        edges, steps, rows = _derive_rows(alpha, CNN_SPACE, primitives, k, excluded)


def derive_genotype(alpha_normal: np.ndarray, alpha_reduce: Optional[np.ndarray] = None, k: int = 2,
                    primitives: Sequence[str] = CNN_PRIMITIVES, max_skip_connects: Optional[int] = None) -> AnyGenotype:
    """The discrete cell from alphas (paper sect. 2.4): top-k predecessors per node, strongest non-'none' op each.

    With `alpha_reduce` it derives a CNN `Genotype` (k=2 in the paper); without it, a `RecurrentGenotype`
    from the single recurrent alpha (call with k=1 and RNN_PRIMITIVES). Concat = all intermediate nodes.
    `max_skip_connects` caps the skip_connects of the CNN normal cell (``cap_skip_connects``; 0 / None: no cap).
    """
    if alpha_reduce is None:
        edges, steps = _derive_edges(np.asarray(alpha_normal), RNN_SPACE, primitives, k)
        return RecurrentGenotype(recurrent=edges, concat=range(1, steps + 1))
    normal, steps = cap_skip_connects(np.asarray(alpha_normal), max_skip_connects, primitives, k)
    reduce, _ = _derive_edges(np.asarray(alpha_reduce), CNN_SPACE, primitives, k)
    concat = range(2, 2 + steps)
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)


def derive_recurrent_genotype(alpha: np.ndarray, k: int = 1) -> RecurrentGenotype:
    return derive_genotype(alpha, None, k=k, primitives=RNN_PRIMITIVES)


def derive_from_alphas(alphas: Dict[str, np.ndarray], primitives: Optional[Sequence[str]] = None,
                       k: Optional[int] = None, max_skip_connects: Optional[int] = None) -> AnyGenotype:
    """The genotype a search's alphas (as saved in alphas.npz) encode: ``alpha_normal`` + ``alpha_reduce`` give a
    CNN cell (k=2 by default; `max_skip_connects` caps its normal cell's skip_connects), a single alpha a recurrent
    cell (k=1 by default)."""
    if "alpha_normal" in alphas and "alpha_reduce" in alphas:
        return derive_genotype(alphas["alpha_normal"], alphas["alpha_reduce"], k=k or 2,
                               primitives=primitives or CNN_PRIMITIVES, max_skip_connects=max_skip_connects)
    if len(alphas) == 1:
        return derive_genotype(next(iter(alphas.values())), None, k=k or 1, primitives=primitives or RNN_PRIMITIVES)
    raise ValueError(f"alphas hold {sorted(alphas)}; expected alpha_normal and alpha_reduce (CNN) or one recurrent "
                     f"alpha (RNN).")


def _random_edges(rng: np.random.Generator, space: _EdgeSpace, primitives: Sequence[str], steps: int) -> Tuple[Edge, ...]:
    ops = [p for p in primitives if p != "none"]
    edges: List[Edge] = []
    for node in range(steps):
        n = space.num_inputs + node
        for j in sorted(rng.choice(n, size=min(space.edges_per_node, n), replace=False)):
            edges.append((ops[int(rng.integers(len(ops)))], int(j)))
    return tuple(edges)


def random_genotype(seed: int, kind: str = "cnn", steps: Optional[int] = None) -> AnyGenotype:
    """A genotype sampled uniformly from the search space (the paper's random-search baseline)."""
    rng = np.random.default_rng(seed)
    if kind == "cnn":
        steps = steps or CNN_STEPS
        concat = range(2, 2 + steps)
        return Genotype(_random_edges(rng, CNN_SPACE, CNN_PRIMITIVES, steps), concat,
                        _random_edges(rng, CNN_SPACE, CNN_PRIMITIVES, steps), concat)
    steps = steps or RNN_STEPS
    return RecurrentGenotype(_random_edges(rng, RNN_SPACE, RNN_PRIMITIVES, steps), range(1, steps + 1))
