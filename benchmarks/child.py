"""The measuring child: what one fresh process started by ``run.py --child`` does. It builds a configuration's
model and synthetic data (``BUILDERS``: the CNN search supernet, the CNN evaluation network, the RNN search
network, with the paper's optimizers), runs Keras' own train function through its first (tracing) call and the
warm-up, times the steps, and prints the record (``run_child``, ``main``). It also says which environment a child
needs (``child_env``: quieter TensorFlow logging and the configuration's malloc in LD_PRELOAD, ``malloc_preload``).
TensorFlow, Keras and darts_tf are imported only inside the functions that measure.
"""

from __future__ import annotations

import dataclasses

import json
import math
import os
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

from benchmarks.configs import MALLOCS, BenchConfig
from benchmarks.records import base_record, environment, load_avg, validate_record

RESULT_PREFIX = "BENCH_RESULT "  # the child's stdout line that holds its record
MIXED_PRECISION_ON_CPU = ("mixed precision needs a GPU (float16 kernels); no GPU is visible, so this configuration "
                          "is skipped on CPU")


def _cnn_search_model(cfg: BenchConfig):
    import numpy as np
    import tensorflow as tf

    from darts_tf.cnn.search import SearchConfig, build_search_model
    from darts_tf.data import images

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
                          exact_hvp=cfg.exact_hvp, partial_channels=cfg.partial_channels,
                          edge_normalization=cfg.edge_normalization)
    model = build_search_model(config, (cfg.image_size, cfg.image_size, 3), cfg.num_classes, steps)
    if cfg.data == "cached":
        ds = tf.data.Dataset.from_tensors(next(iter(ds))).repeat()
    return model, ds


def _cnn_eval_model(cfg: BenchConfig):
    import keras
    import numpy as np
    import tensorflow as tf

    from darts_tf.cnn.networks import NetworkCIFAR, build_network
    from darts_tf.data import images

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
    from darts_tf.distribute import distribute_row_streams, rows_of
    from darts_tf.rnn.search_space import RNNSearchNetwork

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
    bilevel = dataclasses.replace(RNNSearchNetwork.default_bilevel, mode=cfg.arch_mode,
                                  exact_recompute=cfg.exact_recompute, exact_hvp=cfg.exact_hvp)
    model = RNNSearchNetwork(cfg.vocab_size, units=cfg.units, steps=cfg.nodes, seed=0, bilevel=bilevel)
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(20.0), arch_optimizer=keras.optimizers.Adam(3e-3, 0.9, 0.999),
                  jit_compile=cfg.jit_compile)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync  # built in a strategy's scope: its replicas
    model.carried.reset(batch_size=cfg.batch_size // replicas)  # XLA cannot change the carried state's shape
    if cfg.data == "cached":  # the second window: starts past column 0, so the carried hidden state is used
        ds = tf.data.Dataset.from_tensors(next(iter(ds.skip(1)))).repeat()
    if replicas > 1:  # each replica's rows of every window, as the search feeds them (already distributed)
        windows = ds
        ds = distribute_row_streams(tf.distribute.get_strategy(),
                                    lambda start, stop: windows.map(lambda w: rows_of(w, start, stop)), cfg.batch_size)
    return model, ds


BUILDERS = {"cnn_search": _cnn_search_model, "cnn_eval": _cnn_eval_model, "rnn_search": _rnn_search_model}


def sync(logs) -> Dict[str, float]:
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


def _device_name(tf, gpus) -> str:
    if not gpus:
        return "cpu"
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU:0")


def _build(cfg: BenchConfig):
    """`cfg`'s Keras train function (the one ``fit`` runs) and data iterator, and the seconds building them took."""
    start = time.perf_counter()
    model, dataset = BUILDERS[cfg.model](cfg)
    model.make_train_function()
    return model.train_function, iter(dataset), time.perf_counter() - start


def _time_steps(cfg: BenchConfig, train_function,
                iterator) -> Tuple[float, List[float], Dict[str, float], Dict[str, Any]]:
    """The first (tracing) call's seconds, then after the warm-up each timed step's seconds, the last step's outputs
    and what the timed steps cost besides wall time."""
    import resource

    start = time.perf_counter()
    logs = sync(train_function(iterator))
    trace_s = time.perf_counter() - start
    for _ in range(cfg.warmup - 1):
        logs = sync(train_function(iterator))
    times = []
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(cfg.iters):
        start = time.perf_counter()
        logs = sync(train_function(iterator))
        times.append(time.perf_counter() - start)
    return trace_s, times, logs, _timed_usage(usage_start, resource.getrusage(resource.RUSAGE_SELF))


def _measurements(cfg: BenchConfig, build_s: float, trace_s: float, times: List[float],
                  usage: Dict[str, Any]) -> Dict[str, Any]:
    """The measured fields of an ok record."""
    import resource

    median = statistics.median(times)
    fields = dict(build_s=round(build_s, 3), trace_compile_s=round(trace_s, 3),
                  step_s={"median": round(median, 4), "min": round(min(times), 4), "max": round(max(times), 4),
                          "mean": round(statistics.fmean(times), 4), "all": [round(t, 4) for t in times]},
                  examples_per_s=round(cfg.batch_size / median, 2),
                  peak_host_mem_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1), **usage)
    if cfg.window:
        fields["tokens_per_s"] = round(cfg.batch_size * cfg.window / median, 1)
    return fields


def configure_grappler(cfg: BenchConfig, grappler_options: Optional[Dict[str, bool]] = None) -> None:
    """The Grappler settings `cfg` measures with: its ``grappler_options`` (or `grappler_options`) through
    ``tf.config.optimizer.set_experimental_options``, then darts_tf's settings or, with ``tf_grappler_defaults``,
    TensorFlow's (``darts_tf.graph_options``; after set_experimental_options, which resets them)."""
    import tensorflow as tf

    from darts_tf.graph_options import apply_graph_options

    options = grappler_options or cfg.grappler_options
    if options:
        tf.config.optimizer.set_experimental_options(options)
    apply_graph_options(cfg.tf_grappler_defaults)


def run_child(cfg: BenchConfig) -> Dict[str, Any]:
    """Builds, traces and times `cfg` in this process; returns its record."""
    load_start = load_avg()
    if MALLOCS[cfg.malloc] is not None and MALLOCS[cfg.malloc][0] not in _loaded_libraries():
        return base_record(cfg, "error", f"malloc={cfg.malloc!r} was asked for but {MALLOCS[cfg.malloc][0]} is not "
                           "loaded in this process (run it through benchmarks/run.py, which sets LD_PRELOAD)", load_start)
    import keras
    import tensorflow as tf

    env = environment(tf.__version__, keras.__version__)
    gpus = tf.config.list_physical_devices("GPU")
    device = _device_name(tf, gpus)
    if cfg.mixed_precision and not gpus:
        return base_record(cfg, "skipped", MIXED_PRECISION_ON_CPU, load_start, env, device)
    configure_grappler(cfg)
    keras.utils.set_random_seed(0)
    train_function, iterator, build_s = _build(cfg)
    trace_s, times, logs, usage = _time_steps(cfg, train_function, iterator)
    if not all(math.isfinite(v) for v in logs.values()):
        return {**base_record(cfg, "error", f"non-finite step outputs {logs}", load_start, env, device),
                "build_s": build_s, "trace_compile_s": trace_s}
    record = base_record(cfg, "ok", None, load_start, env, device)
    record.update(_measurements(cfg, build_s, trace_s, times, usage))
    if gpus:
        record["peak_gpu_mem_mb"] = round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20, 1)
    return record


def main(config_json: str) -> None:
    """The child process: measures the configuration given as JSON (BenchConfig fields) and prints its
    schema-checked record on one stdout line after RESULT_PREFIX, where the parent looks for it."""
    record = validate_record(run_child(BenchConfig(**json.loads(config_json))))
    print(RESULT_PREFIX + json.dumps(record), flush=True)
