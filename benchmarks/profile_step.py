"""Profiles one benchmark configuration's train_step: graph size, tracing vs first-call time, and where the steady
step spends its time by TensorFlow op type (TensorFlow profiler trace, XPlane read without the TensorBoard plugin).

    python benchmarks/profile_step.py --config='{"model": "cnn_search", "batch_size": 16, "arch_mode": "second_order_exact",
        "layers": 5, "channels": 8, "nodes": 4, "image_size": 32, "num_classes": 10}' --steps=2

Prints one JSON object (and the top op types as a table). Runs in this process, like a ``run.py`` child, with the
same model builders (``benchmarks/child.py``).
"""

from __future__ import annotations

import collections
import glob
import json
import os
import resource
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.child import BUILDERS, sync  # noqa: E402
from benchmarks.configs import BenchConfig  # noqa: E402
from benchmarks.records import load_avg  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("config", [], "The configuration to profile, given once: BenchConfig fields as JSON, as "
                          "for benchmarks/run.py --config.")
flags.DEFINE_integer("steps", 2, "Profiled steady-state steps (after the tracing call and one more).")
flags.DEFINE_integer("top", 15, "Op types to list.")
flags.DEFINE_string("grappler_options", None, "JSON for tf.config.optimizer.set_experimental_options before tracing, "
                    "e.g. '{\"disable_meta_optimizer\": true}' to see what graph optimisation costs and gives.")


def op_type_times(logdir: str):
    """Total self time per TF op type on the host threads of the profile in `logdir` (seconds)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.Counter()
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            names = {k: m.name for k, m in plane.event_metadata.items()}
            for line in plane.lines:
                if line.name not in ("tf_Compute", "tf_data_private_threadpool") and not line.name.startswith("tf_"):
                    continue
                for event in line.events:
                    name = names.get(event.metadata_id, "?")
                    op_type = name.split(":")[-1] if ":" in name else name
                    if op_type == "Process":  # the executor's span around the whole step, not an op
                        continue
                    totals[op_type] += event.duration_ps * 1e-12
    return totals


def main(argv):
    del argv
    if len(FLAGS.config) != 1:
        raise app.UsageError("Give the configuration to profile once: --config='<BenchConfig fields as JSON>'.")
    cfg = BenchConfig(**json.loads(FLAGS.config[0]))
    import tensorflow as tf

    if FLAGS.grappler_options:
        tf.config.optimizer.set_experimental_options(json.loads(FLAGS.grappler_options))
    model, dataset = BUILDERS[cfg.model](cfg)
    batch = next(iter(dataset))
    step = tf.function(model.train_step, jit_compile=cfg.jit_compile, autograph=False)  # as Keras
    start = time.perf_counter()
    concrete = step.get_concrete_function(batch)
    python_trace_s = time.perf_counter() - start
    graph_ops = collections.Counter(op.type for op in concrete.graph.get_operations())
    start = time.perf_counter()
    sync(step(batch))
    first_call_s = time.perf_counter() - start
    sync(step(batch))
    logdir = tempfile.mkdtemp(prefix="darts_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        sync(step(batch))
    step_s = (time.perf_counter() - start) / FLAGS.steps
    tf.profiler.experimental.stop()
    by_type = op_type_times(logdir)
    total = sum(by_type.values()) or 1.0
    report = {"name": cfg.name, "graph_ops": sum(graph_ops.values()), "top_graph_op_types": graph_ops.most_common(8),
              "python_trace_s": round(python_trace_s, 2), "first_call_s": round(first_call_s, 2),
              "profiled_step_s": round(step_s, 3), "load_avg": load_avg(), "profile_dir": logdir,
              "grappler_options": tf.config.optimizer.get_experimental_options(),
              "peak_host_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
              "op_time_share": {k: round(v / total, 3) for k, v in by_type.most_common(FLAGS.top)}}
    print(json.dumps(report))
    print("| op type | share of op time | s per step |\n|---|---|---|")
    for k, v in by_type.most_common(FLAGS.top):
        print(f"| {k} | {v / total:.1%} | {v / FLAGS.steps:.3f} |")


if __name__ == "__main__":
    app.run(main)
