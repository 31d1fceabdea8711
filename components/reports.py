"""What the Kubeflow UI shows of a run: KFP artifact metadata, and Markdown / HTML pages beside the artifacts.

The pipeline's own artifacts (directories with an ``artifact.json``, ``components.artifacts``) are what later
stages read; the UI previews neither a directory nor a JSON file. So the KFP components also fill each artifact's
KFP ``.metadata`` (``describe``: type, stage, size, hashes, seed, lineage; the UI's artifact and lineage views show
it) and write, as ``system.Markdown`` / ``system.HTML`` artifacts, the genotype card (its cells edge by edge, with
its lineage), the page of cell pictures (PNGs inline) and the selection table, which the UI renders.
"""

from __future__ import annotations

import base64
import html
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from darts_tf.io_utils import atomic_write_text

from . import artifacts


def describe(*kfp_artifacts: Any) -> None:
    """Sets the KFP `.metadata` of each output artifact from the pipeline artifact its `.path` holds."""
    for artifact in kfp_artifacts:
        artifact.metadata.update(artifacts.kfp_metadata(artifact.path))


def _cells(genotype) -> Dict[str, Sequence]:
    data = genotype.to_dict()
    if data.get("kind") == "rnn":
        return {"recurrent": data["recurrent"]}
    return {"normal": data["normal"], "reduction": data["reduce"]}


def _edge_rows(edges: Sequence, kind: str) -> List[str]:
    """One table row per edge: the node it feeds, the predecessor and the op (paper fig. 4-6)."""
    rows = []
    per_node = 1 if kind == "rnn" else 2
    offset = 1 if kind == "rnn" else 2  # predecessors 0..: RNN x_t/h_{t-1} -> 0; CNN c_{k-2}, c_{k-1} -> 0, 1
    for i, (op, source) in enumerate(edges):
        rows.append(f"| {i // per_node + offset} | {source} | `{op}` |")
    return rows


def genotype_markdown(chosen: artifacts.GenotypeArtifact, title: str = "Genotype") -> str:
    """The genotype card: each cell as a table of edges, the lineage (search, seed, dataset hash), the JSON."""
    kind = chosen.genotype.kind
    lines = [f"# {title} ({kind.upper()})", "", f"`{chosen.genotype}`", ""]
    for cell, edges in _cells(chosen.genotype).items():
        lines += [f"## {cell} cell", "", "| node | input | operation |", "|---|---|---|", *_edge_rows(edges, kind), ""]
    lineage = chosen.lineage
    lines += ["## Lineage", "", "| | |", "|---|---|"]
    for key in ("stage", "seed", "search_uri", "dataset", "dataset_hash", "selection_metric", "selection_value",
                "epochs_done", "resumed_after_epoch"):
        if key in lineage:
            lines.append(f"| {key} | `{lineage[key]}` |")
    lines += ["", f"genotype sha256: `{artifacts.genotype_sha256(chosen.genotype)}`", "", "```json",
              json.dumps(chosen.genotype.to_dict(), indent=1), "```", ""]
    return "\n".join(lines)


def pictures_html(pictures: artifacts.CellPicturesArtifact, chosen: Optional[artifacts.GenotypeArtifact] = None) -> str:
    """One self-contained page with every cell picture (PNG, inline as data URIs) under its cell's name."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>DARTS cells</title></head><body>"]
    if chosen is not None:
        parts.append(f"<h1>{html.escape(chosen.genotype.kind.upper())} cells</h1>"
                     f"<p><code>{html.escape(str(chosen.genotype))}</code></p>")
        seed = chosen.lineage.get("seed")
        if seed is not None:
            parts.append(f"<p>search seed {html.escape(str(seed))}, dataset hash "
                         f"<code>{html.escape(str(chosen.lineage.get('dataset_hash', ''))[:16])}</code></p>")
    for path in pictures.paths("png"):
        with open(path, "rb") as f:
            encoded = base64.b64encode(f.read()).decode("ascii")
        name = os.path.splitext(os.path.basename(path))[0]
        parts.append(f"<h2>{html.escape(name)} cell</h2><img alt='{html.escape(name)} cell' "
                     f"src='data:image/png;base64,{encoded}'/>")
    parts.append("</body></html>")
    return "\n".join(parts)


def selection_markdown(table: Dict[str, Any]) -> str:
    """The select stage's table: every candidate with its seed and score, the winner marked."""
    metric = table["metric"]
    lines = [f"# Selection by {metric} ({'higher' if table['higher_is_better'] else 'lower'} is better)", "",
             f"| candidate | seed | {metric} | genotype | search |", "|---|---|---|---|---|"]
    for row in table["candidates"]:
        mark = " **(best)**" if row["candidate"] == table["best"] else ""
        lines.append(f"| {row['candidate']}{mark} | {row['seed']} | {row[metric]:.4g} | `{row['genotype']}` | "
                     f"{row['search_uri']} |")
    return "\n".join(lines) + "\n"


def write_page(path: str, text: str) -> str:
    """Writes a Markdown / HTML artifact (a single file at the KFP artifact's path), atomically."""
    atomic_write_text(path, text)
    return path
