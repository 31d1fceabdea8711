"""Pictures of genotypes: one Graphviz digraph per cell, as the DARTS reference's visualize.py
(paper figs. 4-6): cell inputs in dark sea green, intermediate nodes in light blue, the cell
output in pale goldenrod, each edge labelled with its op.

    plot_genotype(CNN_GENOTYPES["DARTS_V2"], "pictures")  # pictures/normal.{dot,png,pdf}, reduction.*
    plot_genotype(RNN_GENOTYPES["DARTS_V2"], "pictures")  # pictures/recurrent.{dot,png,pdf}
    plot_genotype(NB201_GENOTYPES["ResNet"], "pictures")  # pictures/cell.{dot,png,pdf} (NAS-Bench-201)

The search's TensorBoard views are drawn here too: ``alpha_heatmap_png`` (softmax(alpha), labelled, colour scaled
to the data's range, with matplotlib), ``genotype_table`` (the cell as a per-node Markdown table) and
``genotype_pngs`` (the digraphs above as PNG bytes).
"""

from __future__ import annotations

import io
import os
import shutil
from typing import Dict, List, Sequence, Tuple

import numpy as np

from darts_tf import io_utils
from darts_tf.genotypes import (NB201_NODES, AnyGenotype, Edge, Genotype, NB201Genotype, RecurrentGenotype,
                                atomic_write_text)

SUPPORTED_FORMATS: Tuple[str, ...] = ("png", "pdf", "svg")
INPUT_COLOR = "darkseagreen2"
NODE_COLOR = "lightblue"
OUTPUT_COLOR = "palegoldenrod"

_INSTALL_HINT = (
    "Graphviz's 'dot' program is needed to draw genotypes but was not found on PATH. "
    "Install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; macOS: `brew install graphviz`), "
    "or pass formats=() / --formats=dot to write only the .dot source."
)


class GraphvizNotFoundError(RuntimeError):
    """Graphviz's `dot` executable is not installed."""


def _digraph():
    import graphviz  # imported here so that the rest of darts_tf does not need it

    graph = graphviz.Digraph(
        format="pdf",
        edge_attr=dict(fontsize="20", fontname="times"),
        node_attr=dict(style="filled", shape="rect", align="center", fontsize="20", height="0.5", width="0.5",
                       penwidth="2", fontname="times"),
        engine="dot",
    )
    graph.attr(rankdir="LR")
    return graph


def cell_digraph(edges: Sequence[Edge], concat: Sequence[int]):
    """The digraph of one CNN cell: states 0, 1 are c_{k-2}, c_{k-1}; state j >= 2 is node j - 2."""
    graph = _digraph()
    graph.node("c_{k-2}", fillcolor=INPUT_COLOR)
    graph.node("c_{k-1}", fillcolor=INPUT_COLOR)
    steps = len(edges) // 2
    for node in range(steps):
        graph.node(str(node), fillcolor=NODE_COLOR)

    def state_name(j: int) -> str:
        return {0: "c_{k-2}", 1: "c_{k-1}"}.get(j, str(j - 2))

    for position, (op, pred) in enumerate(edges):
        graph.edge(state_name(pred), str(position // 2), label=op, fillcolor="gray")
    graph.node("c_{k}", fillcolor=OUTPUT_COLOR)
    for state in concat:
        graph.edge(state_name(state), "c_{k}", fillcolor="gray")
    return graph


def recurrent_digraph(genotype: RecurrentGenotype):
    """The digraph of an RNN cell: x_t and h_{t-1} make node 0; h_t averages the `concat` nodes."""
    graph = _digraph()
    graph.node("x_{t}", fillcolor=INPUT_COLOR)
    graph.node("h_{t-1}", fillcolor=INPUT_COLOR)
    graph.node("0", fillcolor=NODE_COLOR)
    graph.edge("x_{t}", "0", fillcolor="gray")
    graph.edge("h_{t-1}", "0", fillcolor="gray")
    for node in range(1, genotype.steps + 1):
        graph.node(str(node), fillcolor=NODE_COLOR)
    for position, (op, pred) in enumerate(genotype.recurrent):
        graph.edge(str(pred), str(position + 1), label=op, fillcolor="gray")
    graph.node("h_{t}", fillcolor=OUTPUT_COLOR)
    for state in genotype.concat:
        graph.edge(str(state), "h_{t}", fillcolor="gray")
    return graph


def nb201_digraph(genotype: NB201Genotype):
    """The digraph of a NAS-Bench-201 cell: input n0, nodes n1, n2, output n3; every edge labelled with its op
    ('none' edges drawn dashed: they contribute nothing)."""
    graph = _digraph()
    for node in range(NB201_NODES):
        color = INPUT_COLOR if node == 0 else OUTPUT_COLOR if node == NB201_NODES - 1 else NODE_COLOR
        graph.node(f"n{node}", fillcolor=color)
    for j in range(1, NB201_NODES):
        for op, i in genotype.node_inputs(j):
            graph.edge(f"n{i}", f"n{j}", label=op, fillcolor="gray", **({"style": "dashed"} if op == "none" else {}))
    return graph


def genotype_digraphs(genotype: AnyGenotype) -> Dict[str, object]:
    """File stem -> digraph: {'normal', 'reduction'} for a CNN genotype, {'recurrent'} for an RNN one, {'cell'} for a
    NAS-Bench-201 one."""
    if isinstance(genotype, NB201Genotype):
        return {"cell": nb201_digraph(genotype)}
    if isinstance(genotype, Genotype):
        return {
            "normal": cell_digraph(genotype.normal, genotype.normal_concat),
            "reduction": cell_digraph(genotype.reduce, genotype.reduce_concat),
        }
    if isinstance(genotype, RecurrentGenotype):
        return {"recurrent": recurrent_digraph(genotype)}
    raise TypeError(f"plot_genotype needs a Genotype, RecurrentGenotype or NB201Genotype. "
                    f"Received: {type(genotype).__name__}")


def check_formats(formats: Sequence[str]) -> Tuple[str, ...]:
    """Validates picture formats ('dot' alone means: the source only)."""
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f]
    formats = tuple(f.strip().lower() for f in formats)
    unknown = [f for f in formats if f not in SUPPORTED_FORMATS + ("dot",)]
    if unknown:
        raise ValueError(f"Unknown picture format(s) {unknown}; supported: {', '.join(SUPPORTED_FORMATS)} (and 'dot'). "
                         f"Received: formats={list(formats)}")
    return tuple(f for f in formats if f != "dot")


def plot_genotype(genotype: AnyGenotype, output_dir: str, formats: Sequence[str] = ("png", "pdf")) -> List[str]:
    """Draws each cell of `genotype` into `output_dir` as `<cell>.dot` plus one file per format.

    Pictures are rendered in memory and each written through a temporary file and a rename, so a reader never
    sees half a picture; `output_dir` may be remote (gs://, ram://). Returns the written paths (the .dot sources first). Raises GraphvizNotFoundError
    with the install command when a picture format is asked for and `dot` is not installed.
    """
    formats = check_formats(formats)
    if formats and shutil.which("dot") is None:
        raise GraphvizNotFoundError(_INSTALL_HINT)
    graphs = genotype_digraphs(genotype)
    io_utils.makedirs(output_dir)  # local or remote (gs://, ram://): every file goes through io_utils
    written: List[str] = []
    for stem, graph in graphs.items():
        path = os.path.join(output_dir, f"{stem}.dot")
        atomic_write_text(path, graph.source)
        written.append(path)
    if not formats:
        return written
    import graphviz

    rendered = []
    for stem, graph in graphs.items():  # every picture rendered before any is written
        for fmt in formats:
            try:
                rendered.append((os.path.join(output_dir, f"{stem}.{fmt}"), graph.pipe(format=fmt)))
            except graphviz.ExecutableNotFound as e:
                raise GraphvizNotFoundError(_INSTALL_HINT) from e
    for path, picture in rendered:
        io_utils.atomic_write_bytes(path, picture)
        written.append(path)
    return written


def genotype_pngs(genotype: AnyGenotype) -> Dict[str, bytes]:
    """File stem -> PNG bytes of each cell's digraph (``genotype_digraphs``); GraphvizNotFoundError without `dot`."""
    if shutil.which("dot") is None:
        raise GraphvizNotFoundError(_INSTALL_HINT)
    import graphviz

    try:
        return {stem: graph.pipe(format="png") for stem, graph in genotype_digraphs(genotype).items()}
    except graphviz.ExecutableNotFound as e:
        raise GraphvizNotFoundError(_INSTALL_HINT) from e


def _state(state: int, recurrent: bool) -> str:
    return f"n{state}" if recurrent or state >= 2 else ("c_{k-2}", "c_{k-1}")[state]


def genotype_table(genotype: AnyGenotype) -> str:
    """The genotype as Markdown: per cell, one row per node with its inputs and ops (states named as in
    ``darts_tf.health``: c_{k-2}, c_{k-1}, n2, ... for a CNN cell; n0, n1, ... for a recurrent one)."""
    if isinstance(genotype, NB201Genotype):
        lines = ["**cell** (NAS-Bench-201: n0 is the input, n3 the output)", "", "| node | input | op |", "|---|---|---|"]
        lines += [f"| n{j} | n{i} | {op} |" for j in range(1, NB201_NODES) for op, i in genotype.node_inputs(j)]
        return "\n".join(lines + ["", f"`{genotype.to_string()}`"])
    if isinstance(genotype, RecurrentGenotype):
        lines = ["**recurrent** (n0 = f(x_t, h_{t-1}))", "", "| node | input | op |", "|---|---|---|"]
        lines += [f"| n{i + 1} | n{pred} | {op} |" for i, (op, pred) in enumerate(genotype.recurrent)]
        return "\n".join(lines + ["", "h_t = mean(" + ", ".join(f"n{s}" for s in genotype.concat) + ")"])
    if not isinstance(genotype, Genotype):
        raise TypeError(f"genotype_table needs a Genotype, RecurrentGenotype or NB201Genotype. "
                        f"Received: {type(genotype).__name__}")
    parts = []
    for cell, edges, concat in (("normal", genotype.normal, genotype.normal_concat),
                                ("reduce", genotype.reduce, genotype.reduce_concat)):
        lines = [f"**{cell}**", "", "| node | input 1 | op 1 | input 2 | op 2 |", "|---|---|---|---|---|"]
        for node in range(len(edges) // 2):
            (op1, in1), (op2, in2) = edges[2 * node], edges[2 * node + 1]
            lines.append(f"| n{node + 2} | {_state(in1, False)} | {op1} | {_state(in2, False)} | {op2} |")
        lines += ["", "c_{k} = concat(" + ", ".join(_state(s, False) for s in concat) + ")"]
        parts.append("\n".join(lines))
    legend = "States as in the genotype: n2, n3, ... are the nodes drawn 0, 1, ... in the cell pictures."
    return "\n\n".join(parts + [legend])


def alpha_heatmap_png(weights: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str = "",
                      value_label: str = "softmax(alpha)") -> bytes:
    """A heatmap of `weights` [edges, ops] as PNG bytes: rows named by edge, columns by op, each value printed in its
    cell, the colours scaled to the data's min..max (so the few-percent differences that decide a genotype show)
    with a colour bar. Needs matplotlib (drawn without pyplot: no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(rows), len(columns)):
        raise ValueError(f"weights must be [len(rows), len(columns)] = [{len(rows)}, {len(columns)}]. Received: "
                         f"{weights.shape}")
    low, high = float(weights.min()), float(weights.max())
    if high - low < 1e-12:
        high = low + 1e-12
    fig = Figure(figsize=(2.4 + 0.95 * len(columns), 1.4 + 0.36 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="viridis", vmin=low, vmax=high, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(columns)), labels=list(columns), rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=list(rows), fontsize=8)
    middle = (low + high) / 2
    decimals = int(min(6, max(3, np.ceil(-np.log10(high - low)) + 1)))  # enough digits to tell the cells apart
    for i in range(weights.shape[0]):
        for j in range(weights.shape[1]):
            ax.text(j, i, f"{weights[i, j]:.{decimals}f}", ha="center", va="center", fontsize=7,
                    color="black" if weights[i, j] > middle else "white")
    fig.colorbar(image, ax=ax, label=value_label, fraction=0.05, pad=0.02)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def matplotlib_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None
