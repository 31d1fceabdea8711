"""TensorBoard logging for stages that do not run a Keras `fit` (ingest, derive, select).

Each stage logs into its own output artifact, and every artifact lives under the pipeline root, so
``tensorboard --logdir <root>`` shows the whole pipeline: search and training curves, dataset sizes,
the derived cells as pictures and the selection table.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence


def log_stage(logdir: str, scalars: Optional[Dict[str, float]] = None, text: Optional[Dict[str, str]] = None,
              png_files: Sequence[str] = (), step: int = 0) -> None:
    """Writes scalars, markdown text and PNG pictures as one TensorBoard event file under `logdir`."""
    import tensorflow as tf

    os.makedirs(logdir, exist_ok=True)
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=step):
        for name, value in (scalars or {}).items():
            tf.summary.scalar(name, float(value))
        for name, value in (text or {}).items():
            tf.summary.text(name, value)
        for path in png_files:
            with open(path, "rb") as f:
                image = tf.io.decode_png(f.read(), channels=4)
            tf.summary.image(os.path.splitext(os.path.basename(path))[0], image[None])
    writer.flush()
    writer.close()


def markdown_table(rows: Sequence[Dict[str, object]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)
