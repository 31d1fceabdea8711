"""darts-derive: the discrete cell from a search directory's alphas (paper sect. 2.4), plus its pictures.

    darts-derive --search_dir runs/search --output_dir runs/derived [--k 2] [--formats png,pdf] [--max_skip_connects 2]

Reads ``alphas.npz`` and ``run_config.json`` (for the candidate ops) written by darts-search or darts-rnn-search,
keeps the top-k predecessors per node (k=2 for CNN cells, 1 for RNN cells by default), writes ``genotype.json``
and the Graphviz pictures (the pipeline's `derive` stage does the same on artifacts). A search that did not finish
(stopped or killed: no ``alphas.npz``) is derived from its last finished epoch's alphas (``alpha_history.npz``), and
says so on stderr and in the genotype's metadata; non-finite alphas (a diverged search) are refused. A search run
with --max_skip_connects is derived with the same skip_connect cap (P-DARTS' rule, ``genotypes.cap_skip_connects``)
unless --max_skip_connects says otherwise. A --search_space=nb201 search gives its NAS-Bench-201 cell (top-1 op per
edge, 'none' included; --k and --max_skip_connects do not apply) as NAS-Bench-201's architecture string, and cell.*.
"""

import sys
from typing import Tuple

from absl import flags

from darts_tf import genotypes as gt
from darts_tf import io_utils
from darts_tf.io_utils import check_output_dir, load_json
from darts_tf.run_files import RunFiles
from darts_tf.search import SearchAlphas, load_search_alphas
from darts_tf.cli import common

flags.DEFINE_string("search_dir", None, "A darts-search / darts-rnn-search output directory (alphas.npz; an unfinished "
                    "search's alpha_history.npz).")
flags.DEFINE_string("output_dir", None, "Where to write genotype.json and the cell pictures.")
flags.DEFINE_integer("k", None, "Predecessors kept per node (default: 2 for CNN, 1 for RNN).")
flags.DEFINE_list("formats", ["png", "pdf"], "Picture formats.")
flags.DEFINE_integer("max_skip_connects", None, "At most this many skip_connects in the CNN normal cell (P-DARTS' "
                     "cap: the weakest are replaced by their edge's next-best op); 0 = no cap. Default: the search's "
                     "--max_skip_connects (run_config.json), else no cap.")
FLAGS = flags.FLAGS


def search_skip_cap(search_dir: str) -> int:
    """The --max_skip_connects the search in `search_dir` ran with (run_config.json; 0 when it has none)."""
    path = RunFiles(search_dir).run_config
    if not io_utils.isfile(path):
        return 0
    config = load_json(path, "run config", f"restore a copy of {path}, or give --max_skip_connects explicitly.")
    return int(config.get("max_skip_connects") or 0) if isinstance(config, dict) else 0


def derive_search_dir(search_dir: str, k=None, max_skip_connects=None) -> Tuple[gt.AnyGenotype, SearchAlphas]:
    """The genotype the alphas of `search_dir` encode (the final ones, or an unfinished search's last epoch's), and
    those alphas with where they come from. `max_skip_connects` None: the search's own cap (``search_skip_cap``)."""
    found = load_search_alphas(search_dir)
    if max_skip_connects is None:
        max_skip_connects = search_skip_cap(search_dir)
    try:
        return gt.derive_from_alphas(found.alphas, primitives=found.primitives, k=k,
                                     max_skip_connects=max_skip_connects), found
    except ValueError as e:
        raise ValueError(f"{found.source}: {e}") from e


def main(argv):
    common.reject_positional_args(argv)
    if not FLAGS.search_dir or not FLAGS.output_dir:
        raise ValueError("--search_dir and --output_dir are required.")
    if FLAGS.k is not None and FLAGS.k < 1:
        raise ValueError(f"--k must be >= 1. Received: k={FLAGS.k}")
    if FLAGS.max_skip_connects is not None and FLAGS.max_skip_connects < 0:
        raise ValueError(f"--max_skip_connects must be >= 0 (0 = no cap). Received: max_skip_connects="
                         f"{FLAGS.max_skip_connects}")
    check_output_dir(FLAGS.output_dir)
    from darts_tf.visualize import plot_genotype

    genotype, found = derive_search_dir(FLAGS.search_dir, FLAGS.k, FLAGS.max_skip_connects)
    if not found.finished:
        print(f"note: {FLAGS.search_dir} is an unfinished search (no alphas.npz): derived from the alphas after epoch "
              f"{found.epoch}{f' of {found.epochs}' if found.epochs else ''} ({found.source}).", file=sys.stderr)
    out = RunFiles(FLAGS.output_dir).genotype
    gt.save_genotype(genotype, out, {"stage": "derive", "search_dir": io_utils.absolute(FLAGS.search_dir),
                                     "alphas": io_utils.absolute(found.source), "epoch": found.epoch,
                                     "finished": found.finished})
    for p in [out, *plot_genotype(genotype, FLAGS.output_dir, formats=tuple(FLAGS.formats))]:
        print(p)


def run():
    """Console-script entry point (darts-derive)."""
    common.start(main)


if __name__ == "__main__":
    run()
