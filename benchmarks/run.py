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
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from absl import app, flags, logging

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema.json")
SCHEMA_VERSION = 1
RESULT_PREFIX = "BENCH_RESULT "
MODELS = ("cnn_search", "cnn_eval", "rnn_search")
ARCH_MODES = ("first_order", "second_order_exact", "second_order_fd")  # == darts_tf.bilevel.ARCH_MODES
DATA_KINDS = ("cached", "pipeline")
# malloc implementations a child can run under (LD_PRELOAD), by the shared library each one loads and the Debian
# package that ships it; "system" is the C library's own malloc
MALLOCS = {"system": None, "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
           "jemalloc": ("libjemalloc.so.2", "libjemalloc2")}
MIXED_PRECISION_ON_CPU = ("mixed precision needs a GPU (float16 kernels); no GPU is visible, so this configuration "
                          "is skipped on CPU")

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small networks, few iterations, a subset of the grid (< 5 min on 2 CPU cores); "
                  "the same as --grid=quick.")
flags.DEFINE_enum("grid", "full", ["full", "cpu", "quick"], "Which configurations: the full grid (for a GPU), its "
                  "subset for a 2-core CPU in ~25 minutes, or the quick smoke set.")
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


# ------------------------------------------------------------------------------------------ configurations
@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One measured configuration; ``name`` is its id in the JSON lines and the table."""

    model: str
    batch_size: int
    arch_mode: Optional[str] = None
    jit_compile: bool = False
    mixed_precision: bool = False
    data: str = "cached"
    layers: Optional[int] = None
    channels: Optional[int] = None
    nodes: Optional[int] = None
    image_size: Optional[int] = None
    num_classes: Optional[int] = None
    units: Optional[int] = None
    vocab_size: Optional[int] = None
    bptt: Optional[int] = None
    max_seq_len_delta: int = 0
    exact_recompute: bool = True  # second_order_exact: recompute the virtual step (False: keep its tape)
    exact_hvp: str = "reverse"  # second_order_exact: "forward" = forward-over-reverse Hessian-vector product
    grappler_options: Optional[Dict[str, bool]] = None  # tf.config.optimizer.set_experimental_options, before tracing
    malloc: str = "system"  # the child's malloc (MALLOCS): "tcmalloc" or "jemalloc" are preloaded with LD_PRELOAD
    warmup: int = 1
    iters: int = 3

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"Unknown benchmark model {self.model!r}. Known: {', '.join(MODELS)}.")
        if self.model.endswith("_search") and self.arch_mode not in ARCH_MODES:
            raise ValueError(f"A search benchmark needs arch_mode in {ARCH_MODES}. Received: arch_mode={self.arch_mode!r}")
        if self.data not in DATA_KINDS:
            raise ValueError(f"data must be one of {DATA_KINDS}. Received: data={self.data!r}")
        if self.exact_hvp not in ("reverse", "forward"):
            raise ValueError(f"exact_hvp must be 'reverse' or 'forward'. Received: exact_hvp={self.exact_hvp!r}")
        if self.grappler_options is not None and not (
                isinstance(self.grappler_options, dict) and self.grappler_options
                and all(isinstance(k, str) and isinstance(v, bool) for k, v in self.grappler_options.items())):
            raise ValueError("grappler_options must be a non-empty JSON object of booleans for "
                             "tf.config.optimizer.set_experimental_options, e.g. {\"disable_meta_optimizer\": true}. "
                             f"Received: grappler_options={self.grappler_options!r}")
        if self.malloc not in MALLOCS:
            raise ValueError(f"malloc must be one of {', '.join(MALLOCS)}. Received: malloc={self.malloc!r}")
        if self.warmup < 1 or self.iters < 1:
            raise ValueError(f"warmup and iters must be >= 1 (warm-up includes the tracing call). "
                             f"Received: warmup={self.warmup}, iters={self.iters}")

    @property
    def name(self) -> str:
        size = f"L{self.layers}C{self.channels}" if self.model.startswith("cnn") else f"U{self.units}V{self.vocab_size}"
        mode = [self.arch_mode] if self.arch_mode else []
        if self.arch_mode == "second_order_exact" and self.exact_hvp == "forward":
            mode = [self.arch_mode + "_fwdhvp"]
        elif self.arch_mode == "second_order_exact" and not self.exact_recompute:
            mode = [self.arch_mode + "_keeptape"]
        parts = [self.model] + mode + [
            f"{size}b{self.batch_size}", "xla" if self.jit_compile else "noxla",
            "mp16" if self.mixed_precision else "fp32", self.data]
        if self.grappler_options:
            parts.append("grappler[" + ",".join(f"{k}={int(v)}" for k, v in sorted(self.grappler_options.items())) + "]")
        if self.malloc != "system":
            parts.append(f"malloc[{self.malloc}]")
        return "/".join(parts)

    @property
    def window(self) -> Optional[int]:
        return None if self.bptt is None else self.bptt + self.max_seq_len_delta

    def shape(self) -> Dict[str, Optional[int]]:
        return {"layers": self.layers, "channels": self.channels, "nodes": self.nodes, "image_size": self.image_size,
                "num_classes": self.num_classes, "units": self.units, "vocab_size": self.vocab_size,
                "window": self.window}


def _cnn_search(mode, batch, layers=8, channels=16, image_size=32, nodes=4, **kw):
    return BenchConfig("cnn_search", batch, mode, layers=layers, channels=channels, nodes=nodes, image_size=image_size,
                       num_classes=10, **kw)


def _cnn_eval(batch, layers=20, channels=36, **kw):
    return BenchConfig("cnn_eval", batch, None, layers=layers, channels=channels, image_size=32, num_classes=10, **kw)


def _rnn_search(mode, batch, units=300, vocab=10000, nodes=8, bptt=35, delta=20, **kw):
    return BenchConfig("rnn_search", batch, mode, nodes=nodes, units=units, vocab_size=vocab, bptt=bptt,
                       max_seq_len_delta=delta, **kw)


def full_grid() -> List[BenchConfig]:
    """The paper's shapes: CNN search 8 cells C=16 (batch 64 and 16), evaluation 20 cells C=36 batch 96, RNN search
    300 units, PTB vocabulary, windows of bptt 35 padded to 55 as darts_tf.data.text feeds them (batch 256 and 64);
    each with and without XLA, fp32 and mixed precision; plus tf.data pipeline vs cached for the first order."""
    grid = []
    # iteration counts keep the CPU run near 25 minutes: a batch-64 second-order CNN step is tens of seconds on 2 cores
    cnn_iters = {(64, "first_order"): 3, (64, "second_order_exact"): 2, (64, "second_order_fd"): 2,
                 (16, "first_order"): 5, (16, "second_order_exact"): 3, (16, "second_order_fd"): 3}
    for mp in (False, True):
        for jit in (False, True):
            for batch in (64, 16):
                for mode in ARCH_MODES:
                    grid.append(_cnn_search(mode, batch, jit_compile=jit, mixed_precision=mp,
                                            iters=cnn_iters[batch, mode]))
            grid.append(_cnn_eval(96, jit_compile=jit, mixed_precision=mp, iters=3))
            for batch in (256, 64):
                for mode in ARCH_MODES:
                    grid.append(_rnn_search(mode, batch, jit_compile=jit, mixed_precision=mp, iters=3))
    for batch in (64, 16):
        grid.append(_cnn_search("first_order", batch, data="pipeline", iters=cnn_iters[batch, "first_order"]))
    grid.append(_rnn_search("first_order", 256, data="pipeline", iters=3))
    return grid


def cpu_grid() -> List[BenchConfig]:
    """The subset of ``full_grid`` a 2-core CPU measures in about 25 minutes, most important first: the paper's
    CNN search (batch 64) in the three modes, the RNN search (batch 256) in the three modes, the evaluation network,
    tf.data pipeline vs cached, XLA where it compiles in reasonable time, and mixed precision (skipped on CPU)."""
    grid = [_cnn_search(mode, 64, iters=2) for mode in ("second_order_fd", "second_order_exact", "first_order")]
    grid += [_rnn_search(mode, 256, iters=3) for mode in ARCH_MODES]
    grid += [_cnn_eval(96, iters=2),
             _cnn_search("first_order", 16, iters=4), _cnn_search("first_order", 16, data="pipeline", iters=4),
             _rnn_search("first_order", 64, iters=3), _rnn_search("first_order", 64, jit_compile=True, iters=3),
             _cnn_search("first_order", 16, jit_compile=True, iters=4)]
    grid += [_cnn_search(mode, 64, mixed_precision=True) for mode in ARCH_MODES]
    grid += [_cnn_eval(96, mixed_precision=True)] + [_rnn_search(mode, 256, mixed_precision=True) for mode in ARCH_MODES]
    return grid


def quick_grid() -> List[BenchConfig]:
    """Every model and mode at small sizes; XLA for the RNN first order only; one pipeline-vs-cached pair."""
    # tiny cells (2 nodes) keep graph tracing, which dominates on CPU, inside the 5-minute budget; XLA compilation
    # of the CNN supernet takes minutes on CPU, so the quick set compiles only the RNN with XLA
    small_cnn = dict(layers=3, channels=4, image_size=16, nodes=2, iters=3)
    small_rnn = dict(units=32, vocab=500, nodes=3, delta=5, iters=3)
    grid = [_cnn_search(mode, 16, **small_cnn) for mode in ARCH_MODES]
    grid += [_cnn_search("first_order", 16, data="pipeline", **small_cnn),
             _cnn_search("first_order", 16, mixed_precision=True, **small_cnn),
             _cnn_eval(16, layers=3, channels=8, iters=3)]
    grid += [_rnn_search(mode, 32, **small_rnn) for mode in ARCH_MODES]
    grid += [_rnn_search("first_order", 32, jit_compile=True, **small_rnn)]
    return grid


GRIDS = {"full": full_grid, "cpu": cpu_grid, "quick": quick_grid}


def select(grid: Iterable[BenchConfig], pattern: Optional[str]) -> List[BenchConfig]:
    regex = re.compile(pattern) if pattern else None
    chosen = [c for c in grid if regex is None or regex.search(c.name)]
    names = [c.name for c in chosen]
    if len(set(names)) != len(names):
        raise ValueError(f"Duplicate configuration names: {sorted(n for n in names if names.count(n) > 1)}")
    return chosen


# ------------------------------------------------------------------------------------------ schema
def load_schema() -> Dict[str, Any]:
    with open(SCHEMA_PATH) as f:
        return json.load(f)


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, _TYPES[name])


def schema_errors(value, schema: Dict[str, Any], path: str = "$") -> List[str]:
    """Errors of `value` against the JSON-Schema subset schema.json uses (type, enum, required, properties,
    additionalProperties: false, items, minItems, maxItems, minimum). ``jsonschema`` is not a dependency."""
    errors = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(value, t) for t in types):
            return [f"{path}: {value!r} is not of type {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} < minimum {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        for key, sub in value.items():
            if key in props:
                errors.extend(schema_errors(sub, props[key], f"{path}.{key}"))
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected key {key!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors.extend(schema_errors(item, schema["items"], f"{path}[{i}]"))
    return errors


def validate_record(record: Dict[str, Any], schema: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    errors = schema_errors(record, schema or load_schema())
    if errors:
        raise ValueError(f"Benchmark record {record.get('name')!r} does not match benchmarks/schema.json: "
                         + "; ".join(errors))
    return record


# ------------------------------------------------------------------------------------------ records
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    """The checkout's HEAD (with '+dirty' for uncommitted changes under darts_tf/), or 'unknown'."""
    repo = os.path.dirname(os.path.dirname(SCHEMA_PATH))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "darts_tf"], cwd=repo, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) or "unknown"


def _env(tf_version: str = "", keras_version: str = "") -> Dict[str, Any]:
    return {"tensorflow": tf_version, "keras": keras_version, "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count() or 1, "python": platform.python_version(), "git_commit": git_commit()}


def _load() -> List[float]:
    return [round(x, 2) for x in os.getloadavg()]


def base_record(cfg: BenchConfig, status: str, reason: Optional[str], load_start: List[float],
                env: Optional[Dict[str, Any]] = None, device: str = "cpu") -> Dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "name": cfg.name, "model": cfg.model, "arch_mode": cfg.arch_mode,
            "batch_size": cfg.batch_size, "jit_compile": cfg.jit_compile, "mixed_precision": cfg.mixed_precision,
            "data": cfg.data, "shape": cfg.shape(),
            "exact_recompute": cfg.exact_recompute if cfg.arch_mode == "second_order_exact" else None,
            "exact_hvp": cfg.exact_hvp if cfg.arch_mode == "second_order_exact" else None,
            "grappler_options": cfg.grappler_options, "malloc": cfg.malloc, "status": status, "reason": reason,
            "warmup_iters": cfg.warmup, "timed_iters": cfg.iters, "build_s": None, "trace_compile_s": None, "step_s": None,
            "examples_per_s": None, "tokens_per_s": None, "peak_host_mem_mb": None, "peak_swap_mb": None,
            "timed_major_faults": None, "timed_cpu_s": None, "peak_gpu_mem_mb": None,
            "device": device, "env": env or _env(), "load_avg": {"start": load_start, "end": _load()},
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ------------------------------------------------------------------------------------------ the child: models
def _cnn_search_model(cfg: BenchConfig):
    import numpy as np
    import tensorflow as tf

    from darts_tf.data import images
    from darts_tf.search_runner import SearchConfig, build_cnn_search_model

    steps_per_epoch = 4
    n = 2 * cfg.batch_size * steps_per_epoch  # train_portion 0.5: two halves of steps_per_epoch batches
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, cfg.num_classes, (n,), dtype=np.int64)
    epochs = -(-(cfg.warmup + cfg.iters) // steps_per_epoch) + 1
    ds, steps = images.search_dataset(x, y, cfg.batch_size, 0.5, seed=0, initial_epoch=0, epochs=epochs,
                                      augment=images.AugmentConfig.for_image_size(cfg.image_size),
                                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    config = SearchConfig(output_dir="unused", batch_size=cfg.batch_size, init_channels=cfg.channels,
                          layers=cfg.layers, nodes=cfg.nodes, arch_mode=cfg.arch_mode, jit_compile=cfg.jit_compile,
                          mixed_precision=cfg.mixed_precision, exact_recompute=cfg.exact_recompute,
                          exact_hvp=cfg.exact_hvp)
    model = build_cnn_search_model(config, (cfg.image_size, cfg.image_size, 3), cfg.num_classes, steps)
    if cfg.data == "cached":
        ds = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()
    return model, ds


def _cnn_eval_model(cfg: BenchConfig):
    import keras
    import numpy as np
    import tensorflow as tf

    from darts_tf.data import images
    from darts_tf.networks import NetworkCIFAR, build_network

    model = build_network(NetworkCIFAR("DARTS_V2", C=cfg.channels, num_classes=cfg.num_classes,
                                       num_layers=cfg.layers, auxiliary=True, drop_path_prob=0.2, seed=0),
                          (cfg.image_size, cfg.image_size, 3))
    model.compile(optimizer=keras.optimizers.SGD(0.025, momentum=0.9), auxiliary_weight=0.4, weight_decay=3e-4,
                  grad_clip=5.0, jit_compile=cfg.jit_compile)
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    n = cfg.batch_size * 4
    x = rng.integers(0, 256, (n, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    y = rng.integers(0, cfg.num_classes, (n,), dtype=np.int64)
    ds, _ = images.multi_epoch_dataset(x, y, cfg.batch_size, seed=0, initial_epoch=0,
                                       epochs=cfg.warmup + cfg.iters + 1, mean=(0.49, 0.48, 0.45),
                                       std=(0.25, 0.24, 0.26), augment=images.AugmentConfig(cutout_length=16))
    if cfg.data == "cached":
        ds = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()
    return model, ds


def _rnn_search_model(cfg: BenchConfig):
    import keras
    import numpy as np
    import tensorflow as tf

    from darts_tf.data import text
    from darts_tf.rnn.models import RNNSearchNetwork

    windows = cfg.warmup + cfg.iters + 4
    n_steps = cfg.bptt * windows * 2  # variable-length windows average about bptt; x2 leaves room
    rng = np.random.default_rng(0)
    train = text.batchify(rng.integers(0, cfg.vocab_size, cfg.batch_size * n_steps).astype(np.int32), cfg.batch_size)
    valid = text.batchify(rng.integers(0, cfg.vocab_size, cfg.batch_size * n_steps // 2).astype(np.int32),
                          cfg.batch_size)
    ds, _ = text.lm_search_dataset(train, valid, cfg.bptt, seed=0, epochs=1, variable_length=cfg.max_seq_len_delta > 0,
                                   max_seq_len_delta=cfg.max_seq_len_delta)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    # the paper's search settings (reference rnn/train_search.py)
    model = RNNSearchNetwork(cfg.vocab_size, units=cfg.units, steps=cfg.nodes, seed=0, arch_mode=cfg.arch_mode,
                             exact_recompute=cfg.exact_recompute, exact_hvp=cfg.exact_hvp)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(20.0), arch_optimizer=keras.optimizers.Adam(3e-3, 0.9, 0.999),
                  jit_compile=cfg.jit_compile)
    model.carried.reset(batch_size=cfg.batch_size)  # XLA cannot change the carried state's shape
    if cfg.data == "cached":  # the second window: starts past column 0, so the carried hidden state is used
        ds = tf.data.Dataset.from_tensors(next(iter(ds.skip(1)))).repeat()
    return model, ds


_BUILDERS = {"cnn_search": _cnn_search_model, "cnn_eval": _cnn_eval_model, "rnn_search": _rnn_search_model}


def _sync(logs) -> Dict[str, float]:
    """Fetches the step's outputs to the host, which waits for the step to finish."""
    return {k: float(v) for k, v in logs.items()}


def malloc_preload(name: str) -> Optional[str]:
    """The shared library to put in a child's LD_PRELOAD for the malloc `name` (None for the system one); a
    ValueError naming the package to install when it is not on this machine."""
    if MALLOCS[name] is None:
        return None
    soname, package = MALLOCS[name]
    import ctypes.util

    found = ctypes.util.find_library(soname[3:].split(".so")[0])
    if found != soname:
        raise ValueError(f"malloc={name!r} needs {soname}, which the dynamic linker does not find here "
                         f"(found: {found}). Install it (Debian/Ubuntu: apt-get install {package}) or use malloc='system'.")
    return soname


def child_env(cfg: BenchConfig) -> Dict[str, str]:
    """The environment a child process measuring `cfg` runs with: this one, quieter TensorFlow logging, and the
    configuration's malloc preloaded."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    preload = malloc_preload(cfg.malloc)
    if preload:
        env["LD_PRELOAD"] = " ".join(filter(None, [preload, env.get("LD_PRELOAD")]))
    return env


def _loaded_libraries() -> str:
    with open("/proc/self/maps") as f:
        return f.read()


def _timed_usage(start, end) -> Dict[str, Any]:
    """What the timed steps cost the process besides wall time: CPU seconds (user + system, all threads) and major
    page faults (pages read back from swap or disk). CPU seconds per wall second falling below a swap-free run's
    is what time lost waiting for swap looks like."""
    return {"timed_cpu_s": round(end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime, 3),
            "timed_major_faults": end.ru_majflt - start.ru_majflt}


def run_child(cfg: BenchConfig) -> Dict[str, Any]:
    """Builds, traces and times `cfg` in this process; returns its record."""
    import resource

    load_start = _load()
    if MALLOCS[cfg.malloc] is not None and MALLOCS[cfg.malloc][0] not in _loaded_libraries():
        return base_record(cfg, "error", f"malloc={cfg.malloc!r} was asked for but {MALLOCS[cfg.malloc][0]} is not "
                           "loaded in this process (run it through benchmarks/run.py, which sets LD_PRELOAD)", load_start)
    import keras
    import tensorflow as tf

    env = _env(tf.__version__, keras.__version__)
    gpus = tf.config.list_physical_devices("GPU")
    device = "cpu"
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = details.get("device_name", "GPU:0")
    if cfg.mixed_precision and not gpus:
        return base_record(cfg, "skipped", MIXED_PRECISION_ON_CPU, load_start, env, device)
    if cfg.grappler_options:
        tf.config.optimizer.set_experimental_options(cfg.grappler_options)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model, dataset = _BUILDERS[cfg.model](cfg)
    model.make_train_function()
    train_function = model.train_function
    iterator = iter(dataset)
    build_s = time.perf_counter() - start

    start = time.perf_counter()
    logs = _sync(train_function(iterator))
    trace_s = time.perf_counter() - start
    for _ in range(cfg.warmup - 1):
        logs = _sync(train_function(iterator))
    times = []
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(cfg.iters):
        start = time.perf_counter()
        logs = _sync(train_function(iterator))
        times.append(time.perf_counter() - start)
    if not all(math.isfinite(v) for v in logs.values()):
        return {**base_record(cfg, "error", f"non-finite step outputs {logs}", load_start, env, device),
                "build_s": build_s, "trace_compile_s": trace_s}

    median = statistics.median(times)
    record = base_record(cfg, "ok", None, load_start, env, device)
    record.update(build_s=round(build_s, 3), trace_compile_s=round(trace_s, 3),
                  step_s={"median": round(median, 4), "min": round(min(times), 4), "max": round(max(times), 4),
                          "mean": round(statistics.fmean(times), 4), "all": [round(t, 4) for t in times]},
                  examples_per_s=round(cfg.batch_size / median, 2),
                  peak_host_mem_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
                  **_timed_usage(usage_start, resource.getrusage(resource.RUSAGE_SELF)))
    if cfg.window:
        record["tokens_per_s"] = round(cfg.batch_size * cfg.window / median, 1)
    if gpus:
        record["peak_gpu_mem_mb"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20, 1)
    return record


# ------------------------------------------------------------------------------------------ the parent
# TensorFlow's info/warning start-up lines and faulthandler's Python stack dump (a fatal 'F' or error 'E' line, a
# 'Check failed' or a Python traceback is what explains a failure)
_LOG_NOISE = re.compile(r"^([IW]\d{4} |WARNING: All log messages|To enable the following instructions|Current thread 0x|"
                        r"Thread 0x|\s+File \"|\s+Garbage-collecting|\s+<no Python frame>|Extension modules:)")


_ERROR_LINE = re.compile(r"Error\b|Exception\b|Out of memory|Check failed|Killed")


def error_tail(text: str, lines: int = 3) -> str:
    """The last `lines` lines of a child's stderr that are not TensorFlow's start-up logging, after the last line
    that names an error (e.g. XLA's 'Out of memory while trying to allocate ...') when that is further up."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip() and not _LOG_NOISE.match(line)]
    tail = kept[-lines:]
    named = [line for line in kept[:-lines] if _ERROR_LINE.search(line)]
    return " | ".join(named[-1:] + tail)


def _kill_reason(returncode: int, peak_mb: Optional[float]) -> str:
    if returncode == -9:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
        return (f"killed by SIGKILL at {peak_mb:.0f} MiB peak RSS: out of host memory (this machine has "
                f"{total:.0f} GiB; the kernel's OOM killer)")
    if returncode < 0:
        return f"child died of {signal.Signals(-returncode).name}"
    return f"child exited {returncode}"


def run_in_subprocess(cfg: BenchConfig, timeout: float) -> Dict[str, Any]:
    """`cfg` in a fresh Python process (this script with --child); an error record if it fails or times out.

    The child is reaped with ``os.wait4`` so that its peak RSS is known even when it is killed (out of memory)
    or times out; that figure goes into the error record."""
    import tempfile

    load_start = _load()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(dataclasses.asdict(cfg))]
    env = child_env(cfg)
    peak_swap_kb = 0
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        deadline, timed_out = time.monotonic() + timeout, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_swap_kb = max(peak_swap_kb, swapped_kb(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    peak_mb = round(usage.ru_maxrss / 1024.0, 1)
    peak_swap_mb = round(peak_swap_kb / 1024.0, 1)
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX):]), "peak_swap_mb": peak_swap_mb}
    if timed_out:
        reason = f"timed out after {timeout:.0f} s (peak RSS {peak_mb:.0f} MiB so far)"
    else:
        tail = error_tail(stderr or stdout)
        reason = _kill_reason(proc.returncode, peak_mb) + (f": {tail}" if tail else "")
    return {**base_record(cfg, "error", reason[:2000], load_start), "peak_host_mem_mb": peak_mb,
            "peak_swap_mb": peak_swap_mb}


def swapped_kb(pid: int) -> int:
    """How much of process `pid` is in swap now (VmSwap, KiB); 0 if it is gone or the kernel does not say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmSwap:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(records: List[Dict[str, Any]]) -> str:
    head = ("| configuration | mode | batch | XLA | precision | data | trace+compile s | step s median (min-max) "
            "| examples/s | peak RSS MiB | status |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in records:
        step = r["step_s"]
        step_txt = "-" if step is None else f"{step['median']:.3f} ({step['min']:.3f}-{step['max']:.3f})"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}".replace("|", "\\|")
        size = r["shape"]
        what = (f"{r['model']} L{size['layers']} C{size['channels']}" if r["model"].startswith("cnn")
                else f"{r['model']} {size['units']}u V{size['vocab_size']} T{size['window']}")
        mode = r["arch_mode"] or "-"
        if r.get("exact_hvp") == "forward":
            mode += " (forward HVP)"
        elif r.get("exact_recompute") is False:
            mode += " (keep tape)"
        if r.get("grappler_options"):
            mode += " (grappler: " + ", ".join(f"{k}={v}" for k, v in sorted(r["grappler_options"].items())) + ")"
        if r.get("malloc", "system") != "system":
            mode += f" ({r['malloc']})"
        memory = _fmt(r["peak_host_mem_mb"], 0)
        if r.get("peak_swap_mb"):
            memory += f" + {r['peak_swap_mb']:.0f} swap"
            if r.get("timed_major_faults") is not None:
                memory += f" ({r['timed_major_faults']} major faults timed"
                if r.get("timed_cpu_s") is not None and r["step_s"]:
                    memory += f", {r['timed_cpu_s'] / sum(r['step_s']['all']):.2f} CPU-s per s"
                memory += ")"
        rows.append(f"| {what} | {mode} | {r['batch_size']} | {'on' if r['jit_compile'] else 'off'} "
                    f"| {'mixed16' if r['mixed_precision'] else 'fp32'} | {r['data']} | {_fmt(r['trace_compile_s'], 1)} "
                    f"| {step_txt} | {_fmt(r['examples_per_s'], 1)} | {memory} | {status} |")
    return head + "\n".join(rows) + "\n"


def exact_to_fd_ratios(records: List[Dict[str, Any]]) -> Dict[str, float]:
    """median(second_order_exact) / median(second_order_fd) for every configuration measured in both modes."""
    by_name = {r["name"]: r for r in records if r["status"] == "ok"}
    ratios = {}
    for name, r in by_name.items():
        if r["arch_mode"] == "second_order_exact":
            fd = by_name.get(name.replace("second_order_exact", "second_order_fd"))
            if fd:
                ratios[name.replace("/second_order_exact", "")] = round(r["step_s"]["median"] / fd["step_s"]["median"], 3)
    return ratios


def summarize(paths: List[str]) -> Tuple[List[Dict[str, Any]], str]:
    """Records of `paths` merged by configuration name (the last one read wins), schema-checked, and their table."""
    schema = load_schema()
    by_name: Dict[str, Dict[str, Any]] = {}
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        record = validate_record(json.loads(line), schema)
                    except ValueError as e:
                        raise ValueError(f"{path}:{n}: {e}") from None
                    by_name.pop(record["name"], None)
                    by_name[record["name"]] = record
    records = list(by_name.values())
    ratios = exact_to_fd_ratios(records)
    text = markdown_table(records)
    if ratios:
        text += "\nsecond_order_exact / second_order_fd step time:\n\n" + "".join(f"- {k}: {v}x\n" for k, v in ratios.items())
    return records, text


def main(argv):
    del argv
    if FLAGS.summarize:
        print(summarize(FLAGS.summarize)[1])
        return
    if FLAGS.child:
        record = validate_record(run_child(BenchConfig(**json.loads(FLAGS.child))))
        print(RESULT_PREFIX + json.dumps(record), flush=True)
        return
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
        malloc_preload(name)  # a missing library fails here, before any configuration runs
    if FLAGS.list:
        print("\n".join(c.name for c in configs))
        return
    output = FLAGS.output or os.path.join(os.path.dirname(SCHEMA_PATH), "results",
                                          f"{grid_name}.jsonl")
    markdown = FLAGS.markdown or os.path.splitext(output)[0] + ".md"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    schema = load_schema()
    records = []
    start = time.time()
    with open(output, "w") as f:
        for i, cfg in enumerate(configs):
            record = validate_record(run_in_subprocess(cfg, FLAGS.timeout), schema)
            records.append(record)
            f.write(json.dumps(record) + "\n")
            f.flush()
            step = record["step_s"]["median"] if record["step_s"] else None
            logging.info("[%d/%d] %s: %s step %s s (load %s)", i + 1, len(configs), cfg.name, record["status"],
                         _fmt(step, 3), record["load_avg"]["end"])
    table = markdown_table(records)
    ratios = exact_to_fd_ratios(records)
    with open(markdown, "w") as f:
        f.write(f"Command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`  \n"
                f"Machine: {cpu_model()}, {os.cpu_count()} cores; wall time {time.time() - start:.0f} s\n\n{table}\n")
        if ratios:
            f.write("second_order_exact / second_order_fd step time:\n\n"
                    + "".join(f"- {k}: {v}x\n" for k, v in ratios.items()))
    print(table)
    for k, v in ratios.items():
        print(f"exact/fd {k}: {v}x")
    print(f"wrote {output} and {markdown} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    app.run(main)
