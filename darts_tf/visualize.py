"""Pictures of genotypes: one Graphviz digraph per cell, as the DARTS reference's visualize.py
(paper figs. 4-6): cell inputs in dark sea green, intermediate nodes in light blue, the cell
output in pale goldenrod, each edge labelled with its op.

    plot_genotype(CNN_GENOTYPES["DARTS_V2"], "pictures")  # pictures/normal.{dot,png,pdf}, reduction.*
    plot_genotype(RNN_GENOTYPES["DARTS_V2"], "pictures")  # pictures/recurrent.{dot,png,pdf}
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

from darts_tf.genotypes import AnyGenotype, Edge, Genotype, RecurrentGenotype, atomic_write_text

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


def genotype_digraphs(genotype: AnyGenotype) -> Dict[str, object]:
    """File stem -> digraph: {'normal', 'reduction'} for a CNN genotype, {'recurrent'} for an RNN one."""
    if isinstance(genotype, Genotype):
        return {
            "normal": cell_digraph(genotype.normal, genotype.normal_concat),
            "reduction": cell_digraph(genotype.reduce, genotype.reduce_concat),
        }
    if isinstance(genotype, RecurrentGenotype):
        return {"recurrent": recurrent_digraph(genotype)}
    raise TypeError(f"plot_genotype needs a Genotype or RecurrentGenotype. Received: {type(genotype).__name__}")


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

    Pictures are rendered into a temporary directory and moved into place, so a reader never sees
    half a picture. Returns the written paths (the .dot sources first). Raises GraphvizNotFoundError
    with the install command when a picture format is asked for and `dot` is not installed.
    """
    formats = check_formats(formats)
    if formats and shutil.which("dot") is None:
        raise GraphvizNotFoundError(_INSTALL_HINT)
    graphs = genotype_digraphs(genotype)
    os.makedirs(output_dir, exist_ok=True)
    written: List[str] = []
    for stem, graph in graphs.items():
        path = os.path.join(output_dir, f"{stem}.dot")
        atomic_write_text(path, graph.source)
        written.append(path)
    if not formats:
        return written
    import graphviz

    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".render-") as tmp:
        rendered = []
        for stem, graph in graphs.items():
            for fmt in formats:
                try:
                    out = graph.pipe(format=fmt)
                except graphviz.ExecutableNotFound as e:
                    raise GraphvizNotFoundError(_INSTALL_HINT) from e
                tmp_path = os.path.join(tmp, f"{stem}.{fmt}")
                with open(tmp_path, "wb") as f:
                    f.write(out)
                rendered.append((tmp_path, os.path.join(output_dir, f"{stem}.{fmt}")))
        for tmp_path, path in rendered:
            os.replace(tmp_path, path)
            written.append(path)
    return written
