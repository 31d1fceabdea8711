"""darts-visualize: draw a genotype's cells with Graphviz (the reference's visualize.py).

    python -m darts_tf.cli.visualize DARTS_V2 --output_dir pictures
    python -m darts_tf.cli.visualize runs/search/genotype.json --output_dir pictures --formats png
    python -m darts_tf.cli.visualize DARTS_V2 --kind rnn --output_dir pictures
    python -m darts_tf.cli.visualize '|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|' \
        --output_dir pictures                     # a NAS-Bench-201 cell (pictures/cell.*)

The positional argument is a published genotype name or a genotype JSON file. With --kind=auto a
JSON file says its own kind, and a name is looked up among the CNN genotypes, then the RNN ones.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app, flags

from darts_tf import genotypes
from darts_tf.cli import common
from darts_tf.visualize import GraphvizNotFoundError, check_formats, plot_genotype

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Directory to write <cell>.dot and the pictures into.")
flags.DEFINE_enum("kind", "auto", ["auto", "cnn", "rnn", "nb201"], "Genotype kind; 'auto' takes it from the file, "
                  "the name or a NAS-Bench-201 architecture string.")
flags.DEFINE_list("formats", ["png", "pdf"], "Picture formats (png, pdf, svg); 'dot' alone writes only the source.")
flags.mark_flag_as_required("output_dir")

USAGE = "darts-visualize GENOTYPE_NAME_OR_JSON --output_dir DIR [--kind auto|cnn|rnn] [--formats png,pdf]"


def resolve_any_genotype(name_or_path: str, kind: str = "auto") -> genotypes.AnyGenotype:
    """A genotype from a published name or a JSON file; with kind='auto', CNN names win over RNN names."""
    if kind != "auto":
        return genotypes.resolve_genotype(name_or_path, kind)
    if genotypes.is_nb201_string(name_or_path):
        return genotypes.NB201Genotype.from_string(name_or_path)
    if os.path.exists(name_or_path) or name_or_path.endswith(".json"):
        return genotypes.load_genotype_file(name_or_path)
    for registry_kind in ("cnn", "rnn"):
        try:
            return genotypes.get_genotype(name_or_path, registry_kind)
        except genotypes.GenotypeError:
            pass
    raise genotypes.GenotypeError(
        f"Unknown genotype name {name_or_path!r}. Known CNN genotypes: {', '.join(sorted(genotypes.CNN_GENOTYPES))}; "
        f"known RNN genotypes: {', '.join(sorted(genotypes.RNN_GENOTYPES))}; or pass a genotype JSON file."
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError(f"Expected exactly one genotype name or JSON file. Received: {list(argv[1:])}. "
                             f"Usage: {USAGE}")

    def body():
        formats = check_formats(FLAGS.formats)
        genotype = resolve_any_genotype(argv[1], FLAGS.kind)
        for path in plot_genotype(genotype, FLAGS.output_dir, formats=formats):
            print(path)

    common.run_main(body, errors=(GraphvizNotFoundError,))


def run() -> None:
    """Console-script entry point (`darts-visualize`)."""
    common.start(main)


if __name__ == "__main__":
    run()
