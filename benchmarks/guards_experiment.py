"""Plain DARTS against the `robust` search preset (every collapse guard of darts_tf.collapse on), same budget.

For each preset and seed: ``darts-search`` (a small search on the offline digits data), ``darts-derive`` (with the
search's skip_connect cap), then ``darts-train`` of the derived cell (a short training from scratch, the same for
every cell); records the skip_connects of the derived normal cell and the test accuracy. Each command runs as a
console script in its own process; a finished run (its metrics.json) is kept and skipped when the script is run
again, so an interrupted experiment continues. Writes ``results.json`` (every run, the exact commands) and
``results.md`` (the table) in --output_dir::

    python benchmarks/guards_experiment.py --output_dir runs/guards_experiment   # docs/collapse_guards.md's table
    python benchmarks/guards_experiment.py --output_dir /tmp/g --seeds 1 --search_epochs 1 --train_epochs 1  # smoke
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/guards_experiment", "Where the runs, results.json and results.md go.")
flags.DEFINE_list("presets", ["darts", "robust"], "darts-search --preset values to compare.")
flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds (of the search and of the training).")
flags.DEFINE_string("dataset", "digits", "darts-search / darts-train --dataset.")
flags.DEFINE_string("primitives", "none,max_pool_3x3,skip_connect,sep_conv_3x3",
                    "darts-search --primitives: a collapse-prone subset (skip_connect against one convolution) by "
                    "default, which keeps the experiment near 30 CPU-minutes; '' = the paper's 8 candidates.")
flags.DEFINE_integer("search_layers", 5, "darts-search --layers.")
flags.DEFINE_integer("search_channels", 8, "darts-search --init_channels.")
flags.DEFINE_integer("search_epochs", 8, "darts-search --epochs.")
flags.DEFINE_integer("search_batch_size", 64, "darts-search --batch_size.")
flags.DEFINE_integer("train_layers", 6, "darts-train --layers.")
flags.DEFINE_integer("train_channels", 12, "darts-train --init_channels.")
flags.DEFINE_integer("train_epochs", 10, "darts-train --epochs.")
flags.DEFINE_integer("train_batch_size", 64, "darts-train --batch_size.")

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def _script(name: str) -> str:
    """The console script installed beside this Python (the virtualenv's bin/), else on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else name


def _run(cmd: List[str], log: str) -> float:
    """Runs `cmd` with its output in `log`; returns the wall time. A failure stops the experiment (the log's tail)."""
    start = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=ENV, stdout=f, stderr=subprocess.STDOUT, text=True)
    if proc.returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return time.time() - start


def commands(preset: str, seed: str, run_dir: str) -> Dict[str, List[str]]:
    search, derived, train = (os.path.join(run_dir, d) for d in ("search", "derived", "train"))
    search_cmd = [_script("darts-search"), f"--preset={preset}", f"--dataset={FLAGS.dataset}",
                  f"--layers={FLAGS.search_layers}", f"--init_channels={FLAGS.search_channels}",
                  f"--epochs={FLAGS.search_epochs}", f"--batch_size={FLAGS.search_batch_size}", f"--seed={seed}",
                  "--deterministic", f"--output_dir={search}"]
    if FLAGS.primitives:
        search_cmd.append(f"--primitives={FLAGS.primitives}")
    return {
        "search": search_cmd,
        "derive": [_script("darts-derive"), f"--search_dir={search}", f"--output_dir={derived}", "--formats="],
        "train": [_script("darts-train"), f"--genotype={os.path.join(derived, 'genotype.json')}",
                  f"--dataset={FLAGS.dataset}", f"--layers={FLAGS.train_layers}",
                  f"--init_channels={FLAGS.train_channels}", f"--epochs={FLAGS.train_epochs}",
                  f"--batch_size={FLAGS.train_batch_size}", "--cutout_length=0", "--drop_path_prob=0",
                  "--noauxiliary", f"--seed={seed}", "--eval_every=0", "--verbose=2", f"--output_dir={train}"],
    }


def _skips(genotype_file: str) -> int:
    with open(genotype_file) as f:
        return [op for op, _ in json.load(f)["normal"]].count("skip_connect")


def run_one(preset: str, seed: str) -> Dict[str, Any]:
    run_dir = os.path.join(FLAGS.output_dir, f"{preset}_seed{seed}")
    os.makedirs(run_dir, exist_ok=True)
    cmds = commands(preset, seed, run_dir)
    record = os.path.join(run_dir, "result.json")
    walls: Dict[str, float] = {}
    if os.path.exists(record):  # the wall times of the stages an earlier call ran
        with open(record) as f:
            walls = dict(json.load(f).get("wall_s", {}))
    for stage in ("search", "derive", "train"):
        done = {"search": "search/genotype.json", "derive": "derived/genotype.json", "train": "train/metrics.json"}
        if os.path.exists(os.path.join(run_dir, done[stage])):
            continue  # finished by an earlier call
        print(f"[{preset} seed {seed}] {stage} ...", flush=True)
        walls[stage] = _run(cmds[stage], os.path.join(run_dir, f"{stage}.log"))
    with open(os.path.join(run_dir, "derived", "genotype.json")) as f:
        genotype = json.load(f)
    with open(os.path.join(run_dir, "search", "genotype.json")) as f:
        searched = json.load(f)
    with open(os.path.join(run_dir, "train", "metrics.json")) as f:
        metrics = json.load(f)
    normal_ops = [op for op, _ in genotype["normal"]]
    with np.load(os.path.join(run_dir, "search", "alphas.npz")) as alphas:
        spread = float(np.ptp(alphas["alpha_normal"]))
    per_epoch = [_skips(p) for p in sorted(glob.glob(os.path.join(run_dir, "search", "genotypes", "epoch_*.json")))]
    result = {"preset": preset, "seed": int(seed), "normal_skip_connects": normal_ops.count("skip_connect"),
              "normal_skip_connects_per_epoch": per_epoch, "alpha_normal_spread": spread,
              "normal_parameter_free": sum(op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3") for op in normal_ops),
              "reduce_skip_connects": [op for op, _ in genotype["reduce"]].count("skip_connect"),
              "search_genotype_equals_derived": searched["normal"] == genotype["normal"] and
                                                searched["reduce"] == genotype["reduce"],
              "normal": genotype["normal"], "reduce": genotype["reduce"],
              "test_top1_accuracy": metrics["test_top1_accuracy"], "params_M": metrics.get("params_M"),
              "wall_s": walls, "commands": {k: " ".join(v) for k, v in cmds.items()}}
    with open(record, "w") as f:
        json.dump(result, f, indent=1)
    return result


def table(runs: List[Dict[str, Any]]) -> str:
    lines = ["| preset | seed | skip_connects in derived normal cell | per search epoch | parameter-free ops in normal "
             "cell | max - min of alpha_normal | test accuracy | params (M) |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['preset']} | {r['seed']} | {r['normal_skip_connects']} | "
                     f"{' '.join(map(str, r['normal_skip_connects_per_epoch']))} | {r['normal_parameter_free']} | "
                     f"{r['alpha_normal_spread']:.3f} | {100 * r['test_top1_accuracy']:.2f}% | {r['params_M']:.4f} |")
    lines += ["", "| preset | runs | mean skip_connects | mean test accuracy (min - max) |", "|---|---|---|---|"]
    for preset in FLAGS.presets:
        rs = [r for r in runs if r["preset"] == preset]
        if rs:
            acc = [100 * r["test_top1_accuracy"] for r in rs]
            lines.append(f"| {preset} | {len(rs)} | {statistics.mean(r['normal_skip_connects'] for r in rs):.2f} | "
                         f"{statistics.mean(acc):.2f}% ({min(acc):.2f} - {max(acc):.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    start = time.time()
    runs = []
    for seed in FLAGS.seeds:  # seed-major: an interrupted experiment has both presets of its first seeds
        for preset in FLAGS.presets:
            runs.append(run_one(preset, seed))
            settings = {k: FLAGS[k].value for k in ("dataset", "primitives", "search_layers", "search_channels",
                                                     "search_epochs", "search_batch_size", "train_layers",
                                                     "train_channels", "train_epochs", "train_batch_size")}
            result = {"settings": settings, "command": " ".join(sys.argv), "runs": runs,
                      "wall_time_s_this_call": time.time() - start,
                      "stage_wall_time_s": sum(sum(r["wall_s"].values()) for r in runs)}
            with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
                json.dump(result, f, indent=1)
            with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
                f.write(table(runs))
    print(table(runs))


if __name__ == "__main__":
    app.run(main)
