"""Where the time to the first training step goes, for one benchmark configuration (issue 23).

Splits the wait before the first step into: importing TensorFlow / Keras / darts_tf, building the model (and its
synthetic data), Python tracing of ``train_step`` (``tf.function(...).get_concrete_function``: Keras layer calls,
the gradient graph, the optimizer updates), graph optimisation (Grappler, read from TensorFlow's own
``meta_optimizer`` log) and the rest of the first call (function instantiation: placement, partitioning, kernel
creation, the first step itself), and compares the first call with a steady step. It counts the traced graph's
ops (forward vs gradient, per network pass and per cell, by type) and, in a second trace under ``cProfile``, lists
the Python functions tracing spends its time in, with their time grouped by package.

    python benchmarks/profile_first_step.py                          # the paper's L8 C16 batch 64, first order
    python benchmarks/profile_first_step.py --mode=second_order_exact --layers=5 --channels=8 --batch_size=16
    python benchmarks/profile_first_step.py --config='{"model": "rnn_search", "batch_size": 256, ...}'  # any model
    python benchmarks/profile_first_step.py --grappler_options='{"disable_meta_optimizer": true}'

With ``--jit_compile`` the XLA compilation is part of "instantiation and the rest" (Grappler then sees little).
Writes one JSON object (``--output``, default ``benchmarks/results/first_step/<name>.json``) and prints a summary.
Like a ``run.py`` child it measures in this process, with the same model builders (``benchmarks/child.py``);
run it alone on the machine: every phase is CPU-bound, and each record carries the load average.
"""

from __future__ import annotations

import collections
import cProfile
import importlib
import json
import os
import pstats
import re
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Tuple

# before TensorFlow loads: Grappler's meta optimizer logs each pass and its time at verbosity 1 (INFO)
os.environ["TF_CPP_VMODULE"] = ",".join(filter(None, [os.environ.get("TF_CPP_VMODULE"), "meta_optimizer=1"]))
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"

from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
from benchmarks.configs import ARCH_MODES, BenchConfig  # noqa: E402
from benchmarks.records import environment, load_avg  # noqa: E402

RESULTS_DIR = os.path.join(_REPO, "benchmarks", "results", "first_step")

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "first_order", list(ARCH_MODES), "The CNN search's architecture step.")
flags.DEFINE_integer("layers", 8, "CNN search cells (the paper's 8).")
flags.DEFINE_integer("channels", 16, "CNN search initial channels (the paper's 16).")
flags.DEFINE_integer("nodes", 4, "Intermediate nodes per cell (the paper's 4).")
flags.DEFINE_integer("batch_size", 64, "Batch size (the paper's 64).")
flags.DEFINE_integer("image_size", 32, "Image height and width (CIFAR-10's 32).")
flags.DEFINE_bool("jit_compile", False, "XLA: the first call then includes XLA compilation.")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 (needs a GPU).")
flags.DEFINE_string("config", None, "Instead of the CNN search flags above: any benchmark configuration, as "
                    "BenchConfig fields in JSON (as for benchmarks/run.py --config).")
flags.DEFINE_string("grappler_options", None, "JSON for tf.config.optimizer.set_experimental_options before tracing, "
                    "e.g. '{\"disable_meta_optimizer\": true}'.")
flags.DEFINE_bool("tf_grappler_defaults", False, "TensorFlow's Grappler settings (memory optimizer, two rounds) "
                  "instead of darts_tf's (one round, no memory optimizer; darts_tf.graph_options): as before issue 23.")
flags.DEFINE_bool("cprofile", True, "Trace train_step a second time under cProfile and list where Python spends it "
                  "(about doubles the tracing time of this script; the phase times come from the first trace).")
flags.DEFINE_integer("top", 25, "Python functions to list from cProfile.")
flags.DEFINE_integer("steps", 2, "Steady steps timed after the first call.")
flags.DEFINE_string("output", None, "JSON file to write (default benchmarks/results/first_step/<configuration>.json).")

# one Grappler pass's line: "I... meta_optimizer.cc:973] remapper: Graph size after: 10118 nodes (-2), 24595 edges
# (-2), time = 474.093ms."; an item's first line: "... Starting optimization for grappler item: __inference_train_..."
_LOG_TIME = re.compile(r"^[IWEF]\d{4} (\d\d):(\d\d):(\d+\.\d+)\s+\d+ ")
_ITEM = re.compile(r"Starting optimization for grappler item: (\S+)")
_PASS = re.compile(r"meta_optimizer\.cc:\d+\] (.+?): Graph size after: (\d+) nodes \((-?\d+)\), (\d+) edges "
                   r"\((-?\d+)\), time = ([\d.]+)ms")
_ITEM_END = re.compile(r"Optimized \d+ functions")
_CELL = re.compile(r"(?:^|/)cell_(\d+)(?:_\d+)?/")


def config_from_flags() -> BenchConfig:
    """The configuration to profile: --config, or the CNN search at the size the flags give."""
    if FLAGS.config:
        return BenchConfig(**{"tf_grappler_defaults": FLAGS.tf_grappler_defaults, **json.loads(FLAGS.config)})
    return BenchConfig("cnn_search", FLAGS.batch_size, FLAGS.mode, jit_compile=FLAGS.jit_compile,
                       mixed_precision=FLAGS.mixed_precision, layers=FLAGS.layers, channels=FLAGS.channels,
                       nodes=FLAGS.nodes, image_size=FLAGS.image_size, num_classes=10,
                       tf_grappler_defaults=FLAGS.tf_grappler_defaults)


# ------------------------------------------------------------------------------------------ graph op counts
def op_kind(name: str) -> str:
    """'gradient' for an op the gradient tapes made, 'optimizer' for the optimizers' updates, else 'forward'."""
    if name.startswith("gradient_tape/") or "/gradient_tape/" in name:
        return "gradient"
    top = name.split("/", 1)[0]
    if re.fullmatch(r"(sgd|adam|clip_by_global_norm|global_norm)(_\d+)?", top):
        return "optimizer"
    return "forward"


def op_counts(names_and_types: List[Tuple[str, str]], top: int = 12) -> Dict[str, Any]:
    """Counts of the traced graph's ops: by kind (forward / gradient / optimizer), by network pass (the top-level
    name scope of a network call, e.g. ``cnn_search_network_3``; the gradient of a pass counts with it), per cell
    (forward and gradient ops whose name scope holds ``cell_<i>``) and the most common op types."""
    kinds = collections.Counter()
    passes = collections.Counter()
    cells: Dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    types = collections.Counter()
    for name, op_type in names_and_types:
        kind = op_kind(name)
        kinds[kind] += 1
        types[op_type] += 1
        scope = re.sub(r"^(gradient_tape/)+", "", name).split("/", 1)
        if kind != "optimizer" and len(scope) == 2:
            passes[scope[0]] += 1
        cell = _CELL.search(name)
        if cell:
            cells[int(cell.group(1))][kind] += 1
    return {"total": len(names_and_types), "by_kind": dict(kinds),
            "by_pass": {k: v for k, v in passes.most_common(top) if v >= 100},
            "per_cell": {str(i): dict(cells[i]) for i in sorted(cells)},
            "top_types": dict(types.most_common(top))}


# ------------------------------------------------------------------------------------------ Grappler's log
def grappler_from_log(text: str, item_prefix: str = "__inference_") -> Dict[str, Any]:
    """Grappler's work on the traced function, from TensorFlow's ``meta_optimizer`` log (TF_CPP_VMODULE=
    meta_optimizer=1): the wall time from the start of the biggest ``__inference_*`` item to its end, the sum of its
    passes' own times, those times per pass name, and the graph's node count before and after."""
    items: List[Dict[str, Any]] = []
    current = None
    for line in text.splitlines():
        stamp = _LOG_TIME.match(line)
        seconds = (int(stamp.group(1)) * 3600 + int(stamp.group(2)) * 60 + float(stamp.group(3))) if stamp else None
        start = _ITEM.search(line)
        if start:
            current = {"item": start.group(1), "start": seconds, "end": seconds, "passes": []}
            items.append(current)
            continue
        if current is None:
            continue
        found = _PASS.search(line)
        if found:
            name = found.group(1).split("{", 1)[0]
            current["passes"].append((name, int(found.group(2)), int(found.group(3)), float(found.group(6)) / 1e3))
        if seconds is not None:
            current["end"] = seconds
        if _ITEM_END.search(line):
            current = None
    ours = [i for i in items if i["item"].startswith(item_prefix) and i["passes"]]
    if not ours:
        return {"found": False, "items_seen": len(items)}
    item = max(ours, key=lambda i: i["passes"][0][1] - i["passes"][0][2])  # the largest graph before Grappler
    per_pass = collections.Counter()
    for name, _, _, seconds in item["passes"]:
        per_pass[name] += seconds
    wall = item["end"] - item["start"]
    if wall < 0:  # the log's clock (time of day) passed midnight
        wall += 86400.0
    first = item["passes"][0]
    return {"found": True, "item": item["item"], "wall_s": round(wall, 3),
            "passes_s": round(sum(per_pass.values()), 3),
            "per_pass_s": {k: round(v, 3) for k, v in per_pass.most_common()},
            "nodes_before": first[1] - first[2], "nodes_after": item["passes"][-1][1],
            "other_items": len(items) - 1}


class StderrCapture:
    """Sends this process's file descriptor 2 (where TensorFlow's C++ logging goes) to a file while active."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = open(self.path, "a")
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.close()

    def text(self) -> str:
        with open(self.path) as f:
            return f.read()


# ------------------------------------------------------------------------------------------ timing helpers
class CallTimer:
    """Wraps methods (e.g. ``tf.GradientTape.gradient``) to add up the wall time spent in them and count the
    calls; nested calls of wrapped methods count once, in the outermost."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self._depth = 0
        self._undo = []

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)
        timer = self

        def timed(*args, **kwargs):
            if timer._depth:
                return original(*args, **kwargs)
            timer._depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer.seconds[label] += time.perf_counter() - start
                timer.calls[label] += 1
                timer._depth -= 1

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo = []


def memory_mb() -> Dict[str, float]:
    """This process's resident set now and at its peak (MiB)."""
    rss = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return {"rss_mb": round(rss, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ------------------------------------------------------------------------------------------ cProfile
def package_of(filename: str, function: str) -> str:
    """Which code a profiled function belongs to: keras, tensorflow (Python), tensorflow C++ (the pywrap calls:
    op creation, shape inference, eager runtime), darts_tf, or other Python."""
    if filename == "~":
        return "tensorflow C++ (op creation, shape inference, stacks)" if "tensorflow" in function else "Python builtins"
    for marker, name in (("/keras/", "keras"), ("/tensorflow/", "tensorflow (Python)"), ("/darts_tf/", "darts_tf"),
                         ("/benchmarks/", "benchmarks")):
        if marker in filename:
            return name
    return "other Python"


def _short_path(filename: str) -> str:
    if "/site-packages/" in filename:
        return filename.rsplit("/site-packages/", 1)[1]
    if filename.startswith(_REPO + os.sep):
        return os.path.relpath(filename, _REPO)
    return os.path.basename(filename)


def profile_summary(stats: pstats.Stats, top: int) -> Dict[str, Any]:
    """The cProfile's own time by package, the top functions by own time and by cumulative time, and the Keras
    layer-call and TensorFlow op-creation totals."""
    by_package = collections.Counter()
    rows = []
    for (filename, line, function), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        by_package[package_of(filename, function)] += tottime
        where = function if filename == "~" else f"{_short_path(filename)}:{line}({function})"
        rows.append({"function": where, "ncalls": ncalls, "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)})
    total = sum(by_package.values()) or 1.0

    def cumulative(match: Callable[[str, str], bool]) -> Dict[str, Any]:
        found = [(v[1], v[3]) for (f, _, fn), v in stats.stats.items() if match(f, fn)]
        return {"ncalls": sum(n for n, _ in found), "cumtime_s": round(max((c for _, c in found), default=0.0), 3)}

    return {
        "total_s": round(total, 3),
        "self_time_by_package": {k: {"s": round(v, 3), "share": round(v / total, 3)} for k, v in by_package.most_common()},
        "keras_layer_call": cumulative(lambda f, fn: f.endswith("keras/src/layers/layer.py") and fn == "__call__"),
        "tf_op_creation": cumulative(lambda f, fn: f.endswith("tensorflow/python/framework/ops.py")
                                     and fn == "_create_c_op"),
        "top_by_self_time": sorted(rows, key=lambda r: -r["tottime_s"])[:top],
        "top_by_cumulative_time": sorted(rows, key=lambda r: -r["cumtime_s"])[:top],
    }


# ------------------------------------------------------------------------------------------ the measurement
def profile(cfg: BenchConfig, log_path: str, grappler_options=None, use_cprofile: bool = True, top: int = 25,
            steps: int = 2) -> Dict[str, Any]:
    """Measures `cfg`'s time to the first step, phase by phase, in this process (see the module docstring)."""
    report: Dict[str, Any] = {"name": cfg.name, "load_avg_start": load_avg(), "memory": {}}
    with StderrCapture(log_path) as log:
        (tf, keras), import_s = timed(_import_libraries)
        report["env"] = environment(tf.__version__, keras.__version__)
        report["device"] = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
        from benchmarks.child import BUILDERS, configure_grappler, sync

        configure_grappler(cfg, grappler_options)
        report["grappler_options"] = tf.config.optimizer.get_experimental_options()
        report["tf_grappler_defaults"] = cfg.tf_grappler_defaults

        keras.utils.set_random_seed(0)
        (model, dataset), build_s = timed(lambda: BUILDERS[cfg.model](cfg))
        batch = next(iter(dataset))
        report["memory"]["after_build"] = memory_mb()

        step = tf.function(model.train_step, jit_compile=cfg.jit_compile, autograph=False)  # as Keras traces it
        timer = CallTimer()
        timer.wrap(tf.GradientTape, "gradient", "gradient")
        timer.wrap(keras.optimizers.Optimizer, "apply", "optimizer_apply")
        try:
            concrete, trace_s = timed(lambda: step.get_concrete_function(batch))
        finally:
            timer.restore()
        ops = [(op.name, op.type) for op in concrete.graph.get_operations()]
        report["memory"]["after_trace"] = memory_mb()
        log_before_call = len(log.text())
        logs, first_call_s = timed(lambda: sync(step(batch)))
        report["memory"]["after_first_call"] = memory_mb()
        step_times = [timed(lambda: sync(step(batch)))[1] for _ in range(steps)]
        report["memory"]["after_steps"] = memory_mb()
        grappler = grappler_from_log(log.text()[log_before_call:])

    gradient_s, apply_s = timer.seconds["gradient"], timer.seconds["optimizer_apply"]
    steady = min(step_times)
    grappler_s = grappler["wall_s"] if grappler.get("found") else None
    rest = first_call_s - steady - (grappler_s or 0.0)
    report["phases_s"] = {
        "import": round(import_s, 2), "build": round(build_s, 2), "trace": round(trace_s, 2),
        "trace_gradient": round(gradient_s, 2), "trace_optimizer_apply": round(apply_s, 2),
        "trace_forward_and_rest": round(trace_s - gradient_s - apply_s, 2),
        "first_call": round(first_call_s, 2), "grappler": None if grappler_s is None else round(grappler_s, 2),
        "instantiate_and_rest": round(rest, 2), "steady_step": round(steady, 3),
        "time_to_first_step": round(build_s + trace_s + first_call_s, 2)}
    report["gradient_calls"] = timer.calls["gradient"]
    report["step_times_s"] = [round(t, 3) for t in step_times]
    report["step_outputs"] = logs
    report["graph_ops"] = op_counts(ops)
    report["grappler"] = grappler
    if use_cprofile:
        again = tf.function(model.train_step, jit_compile=cfg.jit_compile, autograph=False)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(again.get_concrete_function, batch)
        report["cprofile_trace_s"] = round(time.perf_counter() - start, 2)
        report["cprofile"] = profile_summary(pstats.Stats(profiler), top)
    report["memory"]["end"] = memory_mb()
    report["load_avg_end"] = load_avg()
    return report


def _import_libraries():
    import keras
    import tensorflow as tf

    importlib.import_module("darts_tf.bilevel")  # the search networks' code, which the builders import
    return tf, keras


def summary_table(report: Dict[str, Any]) -> str:
    p = report["phases_s"]
    rows = [("import TensorFlow, Keras, darts_tf", p["import"]), ("model build (+ synthetic data)", p["build"]),
            ("Python tracing of train_step", p["trace"]), ("  of which gradient-graph construction", p["trace_gradient"]),
            ("  of which optimizer updates", p["trace_optimizer_apply"]),
            ("  of which forward passes and the rest", p["trace_forward_and_rest"]),
            ("first call", p["first_call"]), ("  of which Grappler (its log)", p["grappler"]),
            ("  of which instantiation and the rest, less one step", p["instantiate_and_rest"]),
            ("steady step", p["steady_step"]), ("time to first step (build + trace + first call)", p["time_to_first_step"])]
    lines = [f"{report['name']} (load {report['load_avg_start'][0]} -> {report['load_avg_end'][0]})",
             "| phase | s |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    ops = report["graph_ops"]
    lines.append(f"\ngraph ops: {ops['total']} ({ops['by_kind']}); Grappler left "
                 f"{report['grappler'].get('nodes_after')} nodes")
    return "\n".join(lines)


def main(argv):
    del argv
    from darts_tf.io_utils import write_json

    cfg = config_from_flags()
    grappler_options = json.loads(FLAGS.grappler_options) if FLAGS.grappler_options else None
    if grappler_options is not None and not isinstance(grappler_options, dict):
        raise app.UsageError(f"--grappler_options must be a JSON object of booleans, e.g. "
                             f"'{{\"disable_meta_optimizer\": true}}'. Received: grappler_options={FLAGS.grappler_options}")
    output = FLAGS.output or os.path.join(RESULTS_DIR, cfg.name.replace("/", "_") + ".json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    log_path = os.path.splitext(output)[0] + ".tf.log"
    if os.path.exists(log_path):
        os.remove(log_path)
    report = profile(cfg, log_path, grappler_options, FLAGS.cprofile, FLAGS.top, FLAGS.steps)
    report["command"] = " ".join([os.path.basename(sys.executable)] + sys.argv)
    report["tf_log"] = log_path
    write_json(output, report)
    print(summary_table(report))
    print(f"wrote {output}")


if __name__ == "__main__":
    app.run(main)
