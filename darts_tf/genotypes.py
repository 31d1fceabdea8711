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
    {"kind": "nb201", "arch": "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|...|"}  (NAS-Bench-201's string)

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


def parse_primitives(text: str, known: Sequence[str], flag: str = "primitives") -> List[str]:
    """The candidate ops of ``--primitives a,b,c`` (in the order given: the order of alpha's columns): each one of
    `known`, none repeated, at least two, at least one that is not 'none'."""
    names = [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [p for p in names if p not in known]
    repeated = sorted({p for p in names if names.count(p) > 1})
    problem = (f"unknown {', '.join(unknown)}" if unknown else f"repeated {', '.join(repeated)}" if repeated
               else "fewer than 2 ops" if len(names) < 2 else "only 'none'" if set(names) == {"none"} else None)
    if problem:
        raise ValueError(f"--{flag} must be a comma-separated subset (at least 2, not only 'none') of "
                         f"{', '.join(known)}; {problem}. Received: {flag}={text!r}")
    return names

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


# NAS-Bench-201's cell space (Dong & Yang, ICLR 2020): 4 nodes, node 0 the cell input, node j = sum over i < j of
# op_{j<-i}(node i), node 3 the output; the layers are in darts_tf.cnn.nb201.
NB201_PRIMITIVES: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4
NB201_EDGES: Tuple[Tuple[int, int], ...] = tuple((j, i) for j in range(1, NB201_NODES) for i in range(j))
"""(to, from) of the six edges, in the order of the architecture string: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2."""


@dataclasses.dataclass(frozen=True)
class NB201Genotype:
    """One NAS-Bench-201 cell: ``ops[k]`` is the op on edge ``NB201_EDGES[k]`` ('none' allowed: every edge is kept).
    Written in NAS-Bench-201's string form ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (one ``+``-separated group per
    node j, listing its inputs 0..j-1), which NAS-Bench-201 / NATS-Bench's ``query_index_by_arch`` takes."""

    ops: Tuple[str, ...]

    kind = "nb201"

    def __post_init__(self):
        ops_ = tuple(self.ops) if not isinstance(self.ops, str) else None
        if ops_ is None or len(ops_) != len(NB201_EDGES):
            raise GenotypeError(f"A NAS-Bench-201 cell has {len(NB201_EDGES)} edge ops. Received: ops={self.ops!r}")
        for op in ops_:
            if op not in NB201_PRIMITIVES:
                raise GenotypeError(f"Unknown NAS-Bench-201 op {op!r}; known: {', '.join(NB201_PRIMITIVES)}. "
                                    f"Received: ops={self.ops!r}")
        object.__setattr__(self, "ops", ops_)

    @classmethod
    def from_string(cls, arch: str) -> "NB201Genotype":
        """Parses ``|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|``."""
        if not isinstance(arch, str):
            raise GenotypeError(f"A NAS-Bench-201 architecture string is a str. Received: arch={arch!r}")
        nodes = arch.strip().split("+")
        if len(nodes) != NB201_NODES - 1:
            raise GenotypeError(f"A NAS-Bench-201 architecture string has {NB201_NODES - 1} '+'-separated nodes. "
                                f"Received: arch={arch!r}")
        ops_ = []
        for j, node in enumerate(nodes, start=1):
            if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
                raise GenotypeError(f"Node {j} must be written '|op~i|...|'. Received: node={node!r} in arch={arch!r}")
            tokens = node[1:-1].split("|")
            if len(tokens) != j:
                raise GenotypeError(f"Node {j} takes {j} inputs (0..{j - 1}). Received: node={node!r} in "
                                    f"arch={arch!r}")
            for i, token in enumerate(tokens):
                op, sep, src = token.partition("~")
                if not sep or src != str(i):
                    raise GenotypeError(f"Input {i} of node {j} must be written 'op~{i}'. "
                                        f"Received: token={token!r} in arch={arch!r}")
                if op not in NB201_PRIMITIVES:
                    raise GenotypeError(f"Unknown NAS-Bench-201 op {op!r}; known: {', '.join(NB201_PRIMITIVES)}. "
                                        f"Received: token={token!r} in arch={arch!r}")
                ops_.append(op)
        return cls(tuple(ops_))

    def to_string(self) -> str:
        groups, k = [], 0
        for j in range(1, NB201_NODES):
            groups.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(groups)

    def __str__(self):
        return self.to_string()

    @property
    def edges(self) -> Tuple[Edge, ...]:
        """(op, input node) of every edge, in ``NB201_EDGES`` order."""
        return tuple((op, i) for op, (_, i) in zip(self.ops, NB201_EDGES))

    def node_inputs(self, j: int) -> Tuple[Edge, ...]:
        """(op, input node) pairs that sum into node ``j``."""
        return tuple((op, i) for op, (to, i) in zip(self.ops, NB201_EDGES) if to == j)

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "arch": self.to_string()}


def is_nb201_string(value: Any) -> bool:
    """Whether `value` looks like a NAS-Bench-201 architecture string (``|op~0|+...``) rather than a name or path."""
    return isinstance(value, str) and value.strip().startswith("|")


AnyGenotype = Union[Genotype, RecurrentGenotype, NB201Genotype]
_FIELDS = {"cnn": ("normal", "normal_concat", "reduce", "reduce_concat"), "rnn": ("recurrent", "concat"),
           "nb201": ("arch",)}
_CLASSES = {"cnn": Genotype, "rnn": RecurrentGenotype, "nb201": NB201Genotype}


def genotype_from_dict(data: Dict[str, Any], kind: Optional[str] = None) -> AnyGenotype:
    """Builds a genotype from its JSON object; raises GenotypeError naming the bad field."""
    if not isinstance(data, dict):
        raise GenotypeError(f"A genotype must be a JSON object. Received: {type(data).__name__}")
    found_kind = data.get("kind") or ("rnn" if "recurrent" in data else "cnn")
    if found_kind not in _FIELDS:
        raise GenotypeError(f"Genotype field 'kind' must be one of {', '.join(_FIELDS)}. Received: {found_kind!r}")
    if kind is not None and found_kind not in _kinds(kind):
        raise GenotypeError(f"Expected a {_kind_label(kind)} genotype but the genotype has kind '{found_kind}'.")
    fields = _FIELDS[found_kind]
    missing = [f for f in fields if f not in data]
    if missing:
        raise GenotypeError(f"Genotype is missing field(s) {', '.join(repr(m) for m in missing)}; a {found_kind} genotype needs {', '.join(fields)}.")
    unknown = sorted(set(data) - set(fields) - {"kind", "metadata", "name"})
    if unknown:
        raise GenotypeError(f"Genotype has unknown field(s) {', '.join(repr(u) for u in unknown)}; a {found_kind} genotype has {', '.join(fields)}.")
    if found_kind == "nb201":
        return NB201Genotype.from_string(data["arch"])
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

# NAS-Bench-201 cells by name (any other cell: its architecture string, or a genotype JSON file)
NB201_GENOTYPES: Dict[str, NB201Genotype] = {
    # the ResNet basic block as a cell (NAS-Bench-201 paper sect. 2.1: two 3x3 convs in sequence plus the identity)
    "ResNet": NB201Genotype.from_string("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"),
}

_REGISTRY = {"cnn": CNN_GENOTYPES, "rnn": RNN_GENOTYPES, "nb201": NB201_GENOTYPES}


def _kinds(kind: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """A genotype kind, or several accepted ones, as a tuple (each a key of ``_CLASSES``)."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    unknown = [k for k in kinds if k not in _CLASSES]
    if unknown or not kinds:
        raise ValueError(f"Genotype kinds are {', '.join(_CLASSES)}. Received: kind={kind!r}")
    return kinds


def _kind_label(kind: Union[str, Sequence[str]]) -> str:
    return " or ".join(k.upper() for k in _kinds(kind))


def get_genotype(name: str, kind: str = "cnn") -> AnyGenotype:
    """A published genotype by name; the error lists the known names."""
    registry = _REGISTRY[kind]
    if name not in registry:
        raise GenotypeError(f"Unknown {kind.upper()} genotype name {name!r}. Known: {', '.join(sorted(registry))}; or pass a genotype JSON file.")
    return registry[name]


def resolve_genotype(name_or_path: str, kind: Union[str, Sequence[str]] = "cnn") -> AnyGenotype:
    """A published genotype name, the path of a genotype JSON file (anything that exists or ends in .json), or a
    NAS-Bench-201 architecture string (``|op~0|+...``). `kind`: the accepted kind, or a tuple of them."""
    from darts_tf import io_utils

    kinds = _kinds(kind)
    if is_nb201_string(name_or_path):
        if "nb201" not in kinds:
            raise GenotypeError(f"Expected a {_kind_label(kind)} genotype but {name_or_path!r} is a NAS-Bench-201 "
                                f"architecture string.")
        return NB201Genotype.from_string(name_or_path)
    if io_utils.exists(name_or_path) or name_or_path.endswith(".json"):
        return load_genotype_file(name_or_path, kind=kind)
    if len(kinds) == 1:
        return get_genotype(name_or_path, kinds[0])
    for k in kinds:
        if name_or_path in _REGISTRY[k]:
            return _REGISTRY[k][name_or_path]
    known = "; ".join([", ".join(sorted(_REGISTRY[kinds[0]]))]
                      + [f"{k.upper()}: {', '.join(sorted(_REGISTRY[k]))}" for k in kinds[1:]])
    raise GenotypeError(f"Unknown {kinds[0].upper()} genotype name {name_or_path!r}. Known: {known}; or pass a "
                        f"genotype JSON file{' or a NAS-Bench-201 architecture string' if 'nb201' in kinds else ''}.")


def as_genotype(value: Union[AnyGenotype, Dict[str, Any], str], kind: Union[str, Sequence[str]]) -> AnyGenotype:
    """The `kind` ('cnn', 'rnn', 'nb201', or a tuple of accepted kinds) genotype that `value` is or names: a genotype,
    its dict (``to_dict()`` or JSON object), inline JSON text, a published name, the path of a genotype JSON file or
    a NAS-Bench-201 architecture string (``resolve_genotype``)."""
    kinds = _kinds(kind)
    cls = tuple(_CLASSES[k] for k in kinds)
    if isinstance(value, cls):
        return value
    if isinstance(value, tuple(_CLASSES.values())):
        raise GenotypeError(f"Expected a {_kind_label(kind)} genotype but the genotype has kind '{value.kind}'.")
    if isinstance(value, dict):
        return genotype_from_dict(value, kind=kind)
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return genotype_from_json(value, kind=kind)
    if isinstance(value, str) and value.strip():
        return resolve_genotype(value, kind)
    names = ", ".join(sorted(n for k in kinds for n in _REGISTRY[k]))
    raise GenotypeError(f"genotype must be a published {_kind_label(kind)} genotype name ({names}), a genotype JSON "
                        f"file or inline JSON{', a NAS-Bench-201 architecture string' if 'nb201' in kinds else ''}, "
                        f"a {' or '.join(c.__name__ for c in cls)} or its dict. Received: {value!r}")


# --------------------------------------------------------------------------------------
# Derivation (paper sect. 2.4) and the random-search baseline.


def _softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def normalize_edge_weights(beta: np.ndarray, num_inputs: int = CNN_SPACE.num_inputs) -> np.ndarray:
    """PC-DARTS' edge normalisation: softmax of `beta` (one entry per edge of a cell, in alpha's row order) over
    the incoming edges of each node, in float64 (``darts_tf.cnn.search_space.node_softmax`` is the network's)."""
    beta = np.asarray(beta, np.float64)
    out, start, node = [], 0, 0
    while beta.ndim == 1 and start < beta.size:
        n = num_inputs + node
        out.append(_softmax(beta[start:start + n]))
        start, node = start + n, node + 1
    if beta.ndim != 1 or start != beta.size:
        raise ValueError(f"beta must have one entry per edge of a cell with {num_inputs} inputs (e.g. 14 for 4 nodes). "
                         f"Received: shape {tuple(np.shape(beta))}")
    return np.concatenate(out) if out else beta


def _derive_edges(alpha: np.ndarray, space: _EdgeSpace, primitives: Sequence[str], k: int,
                  excluded: Optional[np.ndarray] = None,
                  edge_weights: Optional[np.ndarray] = None) -> Tuple[Tuple[Edge, ...], int]:
    """Per node: the k strongest predecessors, each edge ranked by its strongest non-'none' op (and not an op that
    the boolean [edges, ops] mask `excluded` rules out on that edge); `edge_weights` (one per edge, PC-DARTS' edge
    normalisation) multiply each edge's op weights first."""
    edges, steps, _ = _derive_rows(alpha, space, primitives, k, excluded, edge_weights)
    return edges, steps


def _derive_rows(alpha, space, primitives, k, excluded=None, edge_weights=None):
    """``_derive_edges`` plus, for each chosen edge, (its alpha row, its op's softmax weight times its edge weight)."""
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
    if edge_weights is not None:
        edge_weights = np.asarray(edge_weights, np.float64)
        if edge_weights.shape != (weights.shape[0],):
            raise ValueError(f"edge_weights must have one entry per alpha row ({weights.shape[0]}). "
                             f"Received: shape {edge_weights.shape}")
        weights = weights * edge_weights[:, None]
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
                      k: int = 2, edge_weights: Optional[np.ndarray] = None) -> Tuple[Tuple[Edge, ...], int]:
    """The CNN cell's edges (as ``_derive_edges``) with at most `max_skip_connects` skip_connects (P-DARTS' rule for
    the normal cell; 0 or None: no cap).

    While the derived cell has more: the chosen skip_connect edge with the smallest softmax weight loses its
    skip_connect (P-DARTS zeroes that probability), so that edge now stands for its next-best non-'none' op, and
    the cell is derived again (predecessors re-ranked: the weakened edge may lose its place to another one). Each
    round rules skip_connect out on one more edge, so the cap is always reached (with no skip_connect left at
    worst); it needs a candidate other than 'none' and skip_connect. `edge_weights`: as ``_derive_edges``.
    """
    primitives = list(primitives)
    edges, steps, rows = _derive_rows(alpha, CNN_SPACE, primitives, k, edge_weights=edge_weights)
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
        edges, steps, rows = _derive_rows(alpha, CNN_SPACE, primitives, k, excluded, edge_weights)


def derive_genotype(alpha_normal: np.ndarray, alpha_reduce: Optional[np.ndarray] = None, k: int = 2,
                    primitives: Sequence[str] = CNN_PRIMITIVES, max_skip_connects: Optional[int] = None,
                    betas: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> AnyGenotype:
    """The discrete cell from alphas (paper sect. 2.4): top-k predecessors per node, strongest non-'none' op each.

    With `alpha_reduce` it derives a CNN `Genotype` (k=2 in the paper); without it, a `RecurrentGenotype`
    from the single recurrent alpha (call with k=1 and RNN_PRIMITIVES). Concat = all intermediate nodes.
    `max_skip_connects` caps the skip_connects of the CNN normal cell (``cap_skip_connects``; 0 / None: no cap).
    `betas` (beta_normal, beta_reduce): PC-DARTS' edge normalisation; each edge's op weights are multiplied by its
    edge weight (``normalize_edge_weights``) before edges and ops are ranked, as PC-DARTS' genotype().
    """
    if alpha_reduce is None:
        edges, steps = _derive_edges(np.asarray(alpha_normal), RNN_SPACE, primitives, k)
        return RecurrentGenotype(recurrent=edges, concat=range(1, steps + 1))
    e_normal, e_reduce = (None, None) if betas is None else (normalize_edge_weights(b) for b in betas)
    normal, steps = cap_skip_connects(np.asarray(alpha_normal), max_skip_connects, primitives, k, e_normal)
    reduce, _ = _derive_edges(np.asarray(alpha_reduce), CNN_SPACE, primitives, k, edge_weights=e_reduce)
    concat = range(2, 2 + steps)
    return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)


EDGE_BETA_NAMES = ("beta_normal", "beta_reduce")  # edge normalisation's architecture variables (PC-DARTS)


def derive_recurrent_genotype(alpha: np.ndarray, k: int = 1) -> RecurrentGenotype:
    return derive_genotype(alpha, None, k=k, primitives=RNN_PRIMITIVES)


NB201_ALPHA = "alpha_cell"  # the one alpha of the NAS-Bench-201 supernet, shared by every cell


def derive_nb201_genotype(alpha: np.ndarray) -> NB201Genotype:
    """The NAS-Bench-201 cell of an alpha of shape (6, 5): the op with the largest weight on every edge, 'none'
    included (as the official DARTS-on-NAS-Bench-201 code, AutoDL-Projects' ``genotype()``); ties: the first op."""
    a = np.asarray(alpha)
    if a.shape != (len(NB201_EDGES), len(NB201_PRIMITIVES)):
        raise ValueError(f"NAS-Bench-201 architecture weights have shape ({len(NB201_EDGES)}, "
                         f"{len(NB201_PRIMITIVES)}). Received: alphas.shape={a.shape}")
    return NB201Genotype(tuple(NB201_PRIMITIVES[int(i)] for i in a.argmax(axis=1)))


def derive_from_alphas(alphas: Dict[str, np.ndarray], primitives: Optional[Sequence[str]] = None,
                       k: Optional[int] = None, max_skip_connects: Optional[int] = None) -> AnyGenotype:
    """The genotype a search's alphas (as saved in alphas.npz) encode: ``alpha_normal`` + ``alpha_reduce`` give a
    CNN cell (k=2 by default; `max_skip_connects` caps its normal cell's skip_connects; ``beta_normal`` +
    ``beta_reduce``, a PC-DARTS search's edge normalisation, weigh its edges), a single alpha a recurrent
    cell (k=1 by default); ``alpha_cell`` a NAS-Bench-201 cell (``derive_nb201_genotype``: no k, no cap)."""
    if NB201_ALPHA in alphas:
        if (primitives is not None and tuple(primitives) != NB201_PRIMITIVES) or (k or 1) != 1 or max_skip_connects:
            raise ValueError(f"A NAS-Bench-201 cell keeps every edge with its top-1 op over "
                             f"{', '.join(NB201_PRIMITIVES)}: no other primitives, k or skip_connect cap applies. "
                             f"Received: primitives={primitives}, k={k}, max_skip_connects={max_skip_connects}")
        return derive_nb201_genotype(alphas[NB201_ALPHA])
    if "alpha_normal" in alphas and "alpha_reduce" in alphas:
        found = [name for name in EDGE_BETA_NAMES if name in alphas]
        if found and len(found) != len(EDGE_BETA_NAMES):
            raise ValueError(f"alphas hold {found[0]} without {set(EDGE_BETA_NAMES).difference(found).pop()}; edge "
                             f"normalisation saves both.")
        return derive_genotype(alphas["alpha_normal"], alphas["alpha_reduce"], k=k or 2,
                               primitives=primitives or CNN_PRIMITIVES, max_skip_connects=max_skip_connects,
                               betas=tuple(alphas[n] for n in EDGE_BETA_NAMES) if found else None)
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


def random_genotype(seed: int, kind: str = "cnn", steps: Optional[int] = None,
                    primitives: Optional[Sequence[str]] = None) -> AnyGenotype:
    """A genotype sampled uniformly from the search space (the paper's random-search baseline): `steps` nodes,
    ops drawn from `primitives` (default: the family's full list; 'none' is never drawn)."""
    rng = np.random.default_rng(seed)
    if kind == "cnn":
        steps, primitives = steps or CNN_STEPS, primitives or CNN_PRIMITIVES
        concat = range(2, 2 + steps)
        return Genotype(_random_edges(rng, CNN_SPACE, primitives, steps), concat,
                        _random_edges(rng, CNN_SPACE, primitives, steps), concat)
    steps, primitives = steps or RNN_STEPS, primitives or RNN_PRIMITIVES
    return RecurrentGenotype(_random_edges(rng, RNN_SPACE, primitives, steps), range(1, steps + 1))
