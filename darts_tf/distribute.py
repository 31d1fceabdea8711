"""Distribution strategies by name (``--strategy`` of the search and training scripts), and where each worker writes.

'auto': ``MirroredStrategy`` when more than one GPU is visible, else the default (one-device) strategy;
'mirrored': ``MirroredStrategy`` over every visible GPU (or the logical CPU devices when there is none);
'multi_worker': ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; 'default': no distribution.

Several machines (``multi_worker``): every worker runs the same program with the same flags and its own
``TF_CONFIG`` (``{"cluster": {"worker": ["host0:port", ...]}, "task": {"type": "worker", "index": i}}``; a Kubeflow
``TFJob`` sets it in each pod). ``--batch_size`` stays the *global* batch: each step splits it over every replica of
every worker, so a run's steps and learning-rate schedule do not depend on how many machines run it. Following
TensorFlow's multi-worker guide, the chief (worker 0, or the task of type ``chief``) alone writes the run directory;
every other worker writes the same files into a temporary directory of its own (``worker_write_dir``) and removes it
when the run ends (``remove_worker_dir``). A resume reads the chief's checkpoint on every worker, so ``--output_dir``
must be storage that each worker reads (a bucket, a shared volume). The strategy has to be created before TensorFlow
runs its first op (its collectives are configured at the start of the process): the trainers call ``make_strategy``
first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, List, Optional

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multi_worker", "default")
# absl flag metadata of the searches' `strategy` field (an enum flag; darts_tf.cli.common)
SEARCH_STRATEGY_METADATA = {"choices": STRATEGIES, "help": (
    "Distribution of the search step: default (one device), mirrored (MirroredStrategy over every visible GPU, or the "
    "logical CPU devices), auto (mirrored when more than one GPU is visible), multi_worker (MultiWorkerMirroredStrategy "
    "from TF_CONFIG). --batch_size is the global batch (a multiple of the replicas) and the learning rates are "
    "unchanged: the step equals the one-device step on that batch (gradients all-reduced, synchronised BatchNorm).")}
TF_CONFIG = "TF_CONFIG"
# Task types that take part in MultiWorkerMirroredStrategy's training (no parameter servers, no evaluator).
_TRAINING_TASKS = ("chief", "worker")


def check_strategy_name(name: str) -> None:
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in a ``TF_CONFIG`` cluster."""

    cluster: Dict[str, List[str]]
    task_type: str
    task_id: int

    @property
    def num_workers(self) -> int:
        """The processes that train: the chief (if any) and the workers."""
        return sum(len(self.cluster.get(t, [])) for t in _TRAINING_TASKS)

    @property
    def is_chief(self) -> bool:
        """The task of type 'chief', or worker 0 in a cluster without one (TensorFlow's rule)."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_id == 0 and "chief" not in self.cluster


def _config_error(detail: str, raw: str) -> ValueError:
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    return ValueError(f"{TF_CONFIG} {detail}; strategy=multi_worker needs a JSON object like "
                      f'{{"cluster": {{"worker": ["host0:2222", "host1:2222"]}}, "task": {{"type": "worker", '
                      f'"index": 0}}}} (the same cluster on every worker, its own task index on each). '
                      f"Received: {TF_CONFIG}={shown!r}")


def parse_tf_config(raw: Optional[str] = None) -> ClusterTask:
    """The cluster and task of ``TF_CONFIG`` (`raw`, else the environment variable), checked: a missing or
    malformed value raises a ValueError that names the problem and shows the expected form."""
    raw = os.environ.get(TF_CONFIG, "") if raw is None else raw
    if not raw.strip():
        raise _config_error("is not set", raw)
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _config_error(f"is not JSON ({e})", raw) from None
    if not isinstance(config, dict):
        raise _config_error("must be a JSON object", raw)
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise _config_error("has no 'cluster' object (task type -> list of 'host:port')", raw)
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses or not all(
                isinstance(a, str) and a.rpartition(":")[0] and a.rpartition(":")[2].isdigit() for a in addresses):
            raise _config_error(f"cluster.{task_type} must be a non-empty list of 'host:port' addresses", raw)
    if not any(t in cluster for t in _TRAINING_TASKS):
        raise _config_error("has no 'worker' (or 'chief') list in its cluster", raw)
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise _config_error("has no 'task' object with 'type' and 'index'", raw)
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise _config_error(f"task.type {task_type!r} is not a task type of its cluster ({', '.join(cluster)})", raw)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        raise _config_error(f"task.index must be an integer in [0, {len(cluster[task_type])}) (cluster.{task_type} "
                            f"has {len(cluster[task_type])} addresses)", raw)
    if task_type not in _TRAINING_TASKS:
        raise _config_error(f"task.type {task_type!r} does not train under MultiWorkerMirroredStrategy (only "
                            f"{' and '.join(_TRAINING_TASKS)} tasks do; no parameter servers or evaluator)", raw)
    return ClusterTask({k: list(v) for k, v in cluster.items()}, task_type, index)


_MULTI_WORKER: Optional[tf.distribute.Strategy] = None


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy called `name` (see the module docstring). 'multi_worker' checks ``TF_CONFIG`` first and is made
    once per process (its collectives cannot be configured twice): later calls return the same strategy."""
    global _MULTI_WORKER
    check_strategy_name(name)
    if name == "multi_worker":
        if _MULTI_WORKER is None:
            parse_tf_config()
            _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
        return _MULTI_WORKER
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _task(strategy: Optional[tf.distribute.Strategy]):
    """(task_type, task_id) of a multi-worker strategy, else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None
    return resolver.task_type, int(resolver.task_id)


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether this process writes the run directory: always, except on the non-chief workers of a multi-worker
    strategy (`strategy`, else the current one)."""
    strategy = strategy or tf.distribute.get_strategy()
    task = _task(strategy)
    if task is None:
        return True
    return bool(strategy.extended.should_checkpoint)


# The prefix of a non-chief worker's temporary run directory.
WORKER_DIR_PREFIX = "darts_tf-worker-"


def worker_write_dir(output_dir: str, strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """Where this process writes the run's files: `output_dir` on the chief (and without multi-worker distribution),
    a fresh local temporary directory on every other worker (TensorFlow's multi-worker guide: the workers save too,
    to places of their own, which they delete; ``remove_worker_dir``)."""
    strategy = strategy or tf.distribute.get_strategy()
    if is_chief(strategy):
        return output_dir
    task_type, task_id = _task(strategy)
    return tempfile.mkdtemp(prefix=f"{WORKER_DIR_PREFIX}{task_type}{task_id}-")


def remove_worker_dir(write_dir: str, output_dir: str) -> None:
    """Removes a non-chief worker's temporary directory (`write_dir` other than `output_dir`); the chief's is kept."""
    if write_dir != output_dir and os.path.basename(write_dir.rstrip("/")).startswith(WORKER_DIR_PREFIX):
        shutil.rmtree(write_dir, ignore_errors=True)


def is_multi_worker(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    return _task(strategy or tf.distribute.get_strategy()) is not None


def shard_by_data(dataset: tf.data.Dataset, strategy: Optional[tf.distribute.Strategy] = None) -> tf.data.Dataset:
    """`dataset` split among the workers of a multi-worker `strategy` by its elements (auto-shard policy DATA: the
    policy for data held in memory, which every worker builds alike); unchanged under any other strategy. Each global
    batch is then divided among all replicas."""
    if not is_multi_worker(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def rows_of(window, start, stop):
    """Rows [start, stop) of every entry of a (nested) window dict that has a batch axis; scalars as they are."""
    return tf.nest.map_structure(lambda v: v if v.shape.rank == 0 else v[start:stop], window)


def distribute_row_streams(strategy: tf.distribute.Strategy, windows_for_rows: Callable[[int, int], tf.data.Dataset],
                           global_batch: int):
    """A stream of windows over `global_batch` rows, where row i of each window continues row i of the window before
    (a language model's BPTT windows, the hidden state carried along each row), as `strategy`'s replicas take it:
    global replica g gets rows [g * b, (g + 1) * b) of every window (b = global_batch / R), the rows whose hidden state
    it carries, and every window on every worker. ``windows_for_rows(start, stop)`` is the window stream of those rows
    only (the same windows for any rows); entries with a batch axis are split, scalars (the window's length and
    start) go to every replica as they are.

    TensorFlow's own input sharding cannot do this: by elements (``shard_by_data``) it would give the workers different
    windows, and ``experimental_distribute_dataset`` cannot split a scalar. So each worker (input pipeline) builds only
    its replicas' rows and cuts every window into one share per local replica, in order: the distributed dataset
    hands consecutive elements to the local replicas in turn. With one replica, ``windows_for_rows(0, global_batch)``.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return windows_for_rows(0, global_batch)
    share = global_batch // replicas

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local  # the global id of this worker's first replica
        windows = windows_for_rows(first * share, (first + local) * share)

        def shares(window):
            return tf.data.Dataset.range(local).map(lambda i: rows_of(window, i * share, (i + 1) * share))

        return windows.flat_map(shares)

    return strategy.distribute_datasets_from_function(pipeline)


def check_same_epoch(strategy: tf.distribute.Strategy, epochs_done: int, output_dir: str) -> None:
    """Refuses a multi-worker run whose workers would start from different epochs (one found the chief's checkpoint
    in `output_dir`, another did not): all-reduces (epochs, epochs**2, 1) and compares. No-op otherwise."""
    if not is_multi_worker(strategy):
        return
    local = tf.constant([epochs_done, epochs_done ** 2, 1], tf.float64)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(local)), axis=None).numpy()
    sum_e, sum_sq, workers = float(total[0]), float(total[1]), float(total[2])
    if sum_sq * workers != sum_e * sum_e:
        raise ValueError(f"The workers of this multi-worker run would resume from different epochs (this one from "
                         f"{epochs_done}; mean {sum_e / workers:g} over {int(workers)} replicas): every worker must "
                         f"read the chief's checkpoint, so --output_dir must be storage they all read (a bucket such "
                         f"as gs://..., or a shared volume). Received: output_dir={output_dir!r}")


def fix_keras_multi_worker(model) -> None:
    """Works around two faults of Keras 3's `fit` / `evaluate` under MultiWorkerMirroredStrategy (keras-team/keras
    #20585; TensorFlow's own multi-worker Keras example fails on them), on this `model` only:

    * before the first step Keras reduces the first distributed batch with one ``strategy.reduce`` over the whole
      (x, y) structure, which this strategy refuses ("Attempt to convert a value (PerReplica...) to a Tensor"); the
      batch only serves to build what is still unbuilt from its shapes, so the model builds from this worker's first
      local batch instead;
    * every step Keras averages the replicas' logs with ``strategy.reduce("MEAN", value, axis=0)``, which fails on
      the scalar logs of a train or test step ("Invalid reduction dimension 0 for input with 0 dimensions"); the
      steps' scalar logs get a leading axis of length 1, so that this reduction is the mean over the replicas.

    No-op under any other strategy. The epoch logs are unchanged: Keras reads them from the metrics, summed over every
    replica of every worker."""
    import types

    from keras import tree

    strategy = model.distribute_strategy
    if not is_multi_worker(strategy):
        return

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=tree.map_structure(local, data_batch))

    def with_axis(step):
        def wrapped(data):
            return tree.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, step(data))
        return wrapped

    model._maybe_symbolic_build = types.MethodType(maybe_symbolic_build, model)
    model.train_step = with_axis(model.train_step)
    model.test_step = with_axis(model.test_step)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for the log: the strategy, its replicas, and this worker's role."""
    task = _task(strategy)
    where = "" if task is None else f", task {task[0]} {task[1]}{' (chief)' if is_chief(strategy) else ''}"
    return f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s){where}"

