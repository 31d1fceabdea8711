"""Search-step throughput of a supernet (CNN or RNN) on one device vs several logical CPU devices under
``tf.distribute.MirroredStrategy`` (issue 21): the same global batch, split over the replicas.

    python benchmarks/distributed_search.py --devices=1,2 --config='{"model": "cnn_search", "batch_size": 32,
        "arch_mode": "first_order", "layers": 5, "channels": 8, "nodes": 4, "image_size": 32, "num_classes": 10}'

Every device count runs in a child process of its own (logical devices must be configured before TensorFlow
starts), with ``benchmarks/child.py``'s model builder and step timing (Keras' train function, the one ``fit`` runs,
fed by the strategy's distributed dataset). Prints one JSON line per device count and a Markdown table. The RNN
search (``"model": "rnn_search"``, with units, vocab_size, nodes, bptt, max_seq_len_delta) runs its time loop unrolled
under several replicas (darts_tf.rnn.ops.run_recurrence), so its trace there is longer than on one device.
On one machine the logical CPU devices share its cores: the figures show what the replicas' all-reduces and
synchronised BatchNorm cost, not a speed-up (that needs several GPUs or machines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.configs import BenchConfig  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "The configuration: BenchConfig fields as JSON (model cnn_search or "
                    "rnn_search), as for benchmarks/run.py --config.")
flags.DEFINE_list("devices", ["1", "2"], "Logical CPU device counts to measure (1: the default strategy).")
flags.DEFINE_integer("child", 0, "Internal: measure in this process with this many logical CPU devices.")
flags.mark_flag_as_required("config")

RESULT_PREFIX = "DIST_RESULT "


def measure(cfg: BenchConfig, devices: int) -> Dict[str, Any]:
    """`cfg`'s search step on `devices` logical CPU devices (MirroredStrategy when more than one), in this process."""
    import keras
    import tensorflow as tf

    from benchmarks.child import BUILDERS, _measurements, _time_steps, configure_grappler
    from darts_tf.distribute import make_strategy

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
    strategy = make_strategy("mirrored" if devices > 1 else "default")
    configure_grappler(cfg)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    with strategy.scope():
        model, dataset = BUILDERS[cfg.model](cfg)
    model.make_train_function()
    if devices > 1 and not isinstance(dataset, tf.distribute.DistributedDataset):  # the RNN's comes distributed by rows
        dataset = strategy.experimental_distribute_dataset(dataset)
    iterator = iter(dataset)
    build_s = time.perf_counter() - start
    trace_s, times, logs, usage = _time_steps(cfg, model.train_function, iterator)
    size = f"L{cfg.layers}_C{cfg.channels}" if cfg.model.startswith("cnn") else f"U{cfg.units}_V{cfg.vocab_size}"
    return {"name": f"{cfg.model}_{cfg.arch_mode}_b{cfg.batch_size}_{size}",
            "devices": devices, "tf_grappler_defaults": cfg.tf_grappler_defaults,
            "replicas": int(strategy.num_replicas_in_sync), "strategy": type(strategy).__name__,
            "loss": logs.get("loss"), **_measurements(cfg, build_s, trace_s, times, usage)}


def main(argv):
    del argv
    cfg = BenchConfig(**json.loads(FLAGS.config))
    if cfg.model not in ("cnn_search", "rnn_search"):
        raise ValueError(f"benchmarks/distributed_search.py measures a search step (model cnn_search or rnn_search). "
                         f"Received: model={cfg.model!r}")
    if FLAGS.child:
        print(RESULT_PREFIX + json.dumps(measure(cfg, FLAGS.child)), flush=True)
        return
    records = []
    for devices in (int(d) for d in FLAGS.devices):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        done = subprocess.run([sys.executable, os.path.abspath(__file__), f"--config={FLAGS.config}",
                               f"--child={devices}"], env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if done.returncode or not lines:
            raise RuntimeError(f"The child with {devices} device(s) failed:\n{done.stderr[-3000:]}")
        records.append(json.loads(lines[-1][len(RESULT_PREFIX):]))
        print(json.dumps(records[-1]), flush=True)
    base = records[0]["step_s"]["median"]
    print("\n| config | devices | step s (median) | min | examples/s | vs first | trace+compile s |")
    print("|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['name']} | {r['devices']} | {r['step_s']['median']:.3f} | {r['step_s']['min']:.3f} | "
              f"{r['examples_per_s']:.1f} | {base / r['step_s']['median']:.2f}x | {r['trace_compile_s']:.1f} |")


if __name__ == "__main__":
    app.run(main)
