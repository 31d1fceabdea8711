"""Step-time benchmarks of the DARTS search and evaluation networks, one fresh process per configuration.

Measures, on synthetic data shaped like the real task, the wall-clock time of one ``train_step`` (for the
bilevel search networks: the architecture step followed by the weight step) through Keras' own
``make_train_function`` (the function ``fit`` runs), after warm-up; the first call (tracing, plus XLA
compilation with ``jit_compile``) is reported apart. Each configuration runs in its own child process so that
peak host memory (``ru_maxrss``), the XLA cache and TensorFlow's thread pools are its own.

Writes one JSON line per configuration (schema: ``benchmarks/schema.json``, checked before writing) and a
Markdown table::

    python benchmarks/run.py --quick                       # < 5 min on 2 CPU cores
    python benchmarks/run.py --grid=cpu                    # RESULTS.md's CPU subset (~25 min on 2 cores)
    python benchmarks/run.py --grid=full                   # every configuration (for a GPU)
    python benchmarks/run.py --only='cnn_search/second_order' --list  # what a filter selects
    python benchmarks/run.py --config='{"model": "cnn_search", "batch_size": 32, "arch_mode": "first_order",
        "layers": 8, "channels": 16, "nodes": 4, "image_size": 32, "num_classes": 10}'   # any other size
    python benchmarks/run.py --summarize results/a.jsonl --summarize results/b.jsonl  # one table from several runs
    python benchmarks/run.py --quick --malloc=tcmalloc      # the children under tcmalloc (LD_PRELOAD)

Mixed precision is measured on a GPU only; on CPU its configurations are recorded as skipped with the reason.
Where the machine has swap, each record also holds the most of the child that was swapped out and the major page
faults and CPU seconds of its timed steps, so that a step slowed by swap can be told apart.

This module is only the command line; the work is done by ``configs`` (the configurations and grids), ``parent``
(one child process per configuration), ``child`` (what that process measures) and ``records`` (the schema-checked
records and their tables).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import List, Tuple

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # run as a script (python benchmarks/run.py): make the benchmarks package importable
    sys.path.insert(0, _REPO)
from benchmarks import child, parent  # noqa: E402
from benchmarks.configs import GRIDS, MALLOCS, BenchConfig, select  # noqa: E402
from benchmarks.records import summarize  # noqa: E402

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small networks, few iterations, a subset of the grid (< 5 min on 2 CPU cores); "
                  "the same as --grid=quick.")
flags.DEFINE_enum("grid", "full", list(GRIDS), "Which configurations: the full grid (for a GPU), its "
                  "subset for a 2-core CPU in ~25 minutes, the quick smoke set, or pc: PC-DARTS' partial channels and "
                  "edge normalisation against the plain supernet (RESULTS.md).")
flags.DEFINE_multi_string("config", [], "Run this configuration (BenchConfig fields as JSON) instead of a grid; "
                          "repeatable. E.g. --config='{\"model\": \"cnn_search\", \"batch_size\": 128, "
                          "\"arch_mode\": \"second_order_exact\", \"layers\": 3, \"channels\": 8, \"nodes\": 4, "
                          "\"image_size\": 32, \"num_classes\": 10, \"exact_recompute\": false}'")
flags.DEFINE_multi_string("summarize", [], "Instead of running: merge these JSON-lines files (a later line of the same "
                          "configuration replaces an earlier one), check them, and print one Markdown table and the "
                          "exact/FD ratios. Repeatable.")
flags.DEFINE_string("only", None, "Regular expression; run only the configurations whose name it matches (re.search).")
flags.DEFINE_bool("list", False, "Print the selected configuration names and exit.")
flags.DEFINE_string("output", None, "JSON-lines file to write (default benchmarks/results/{quick,full}.jsonl).")
flags.DEFINE_string("markdown", None, "Markdown table to write (default: the output with .md).")
flags.DEFINE_integer("iters", None, "Override the timed iterations of every configuration.")
flags.DEFINE_integer("warmup", None, "Override the warm-up iterations (the first, tracing call included).")
flags.DEFINE_enum("malloc", None, list(MALLOCS), "Override every configuration's malloc: run the children under "
                  "tcmalloc or jemalloc (LD_PRELOAD; Debian packages libtcmalloc-minimal4, libjemalloc2).")
flags.DEFINE_integer("timeout", 1200, "Seconds one configuration's process may run before it is recorded as error.")
flags.DEFINE_string("child", None, "Internal: run the one configuration given as JSON in this process.")



def _selected() -> Tuple[str, List[BenchConfig]]:
    """The grid's name ('custom' for --config) and its configurations after --only and the overrides; a missing
    malloc library fails here, before any configuration runs."""
    grid_name = "quick" if FLAGS.quick else FLAGS.grid
    grid = GRIDS[grid_name]()
    if FLAGS.config:
        grid_name, grid = "custom", [BenchConfig(**json.loads(c)) for c in FLAGS.config]
    overrides = {k: v for k, v in (("iters", FLAGS.iters), ("warmup", FLAGS.warmup), ("malloc", FLAGS.malloc))
                 if v is not None}
    configs = [dataclasses.replace(c, **overrides) for c in select(grid, FLAGS.only)]
    if not configs:
        raise ValueError(f"--only={FLAGS.only!r} matches no configuration; see --list.")
    for name in sorted({c.malloc for c in configs}):
        child.malloc_preload(name)
    return grid_name, configs


def main(argv):
    del argv
    if FLAGS.summarize:
        print(summarize(FLAGS.summarize)[1])
        return
    if FLAGS.child:
        child.main(FLAGS.child)
        return
    grid_name, configs = _selected()
    if FLAGS.list:
        print("\n".join(c.name for c in configs))
        return
    output = FLAGS.output or os.path.join(RESULTS_DIR, f"{grid_name}.jsonl")
    markdown = FLAGS.markdown or os.path.splitext(output)[0] + ".md"
    parent.run_all(configs, output, markdown, FLAGS.timeout, " ".join([os.path.basename(sys.executable)] + sys.argv))


if __name__ == "__main__":
    app.run(main)
