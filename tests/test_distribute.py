"""darts_tf.distribute: TF_CONFIG parsed with errors that name the problem, the chief rule, the per-worker write
directories and their cleanup, and the helpers that are no-ops without multi-worker distribution. (Two real worker
processes: tests/cnn/test_multi_worker.py.)"""

import json
import os
import types

import pytest
import tensorflow as tf

from darts_tf import distribute
from darts_tf.distribute import ClusterTask, parse_tf_config

WORKERS = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222", "10.0.0.3:2222"]}


def _config(cluster=WORKERS, task_type="worker", index=0):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_a_tfjob_style_config_gives_the_task_and_worker_0_is_the_chief():
    for index in range(3):
        task = parse_tf_config(_config(index=index))
        assert task == ClusterTask(WORKERS, "worker", index)
        assert task.num_workers == 3
        assert task.is_chief == (index == 0)


def test_with_a_chief_task_the_chief_is_it_and_worker_0_is_not():
    cluster = {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}
    assert parse_tf_config(_config(cluster, "chief", 0)).is_chief
    worker0 = parse_tf_config(_config(cluster, "worker", 0))
    assert not worker0.is_chief and worker0.num_workers == 3


def test_the_environment_variable_is_read_when_no_text_is_given(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _config(index=2))
    assert parse_tf_config().task_id == 2


@pytest.mark.parametrize("raw, match", [
    ("", r"TF_CONFIG is not set; strategy=multi_worker needs a JSON object like .*Received: TF_CONFIG=''"),
    ("{cluster: 1}", r"TF_CONFIG is not JSON \(.*\).*Received: TF_CONFIG='\{cluster: 1\}'"),
    ("[1, 2]", r"TF_CONFIG must be a JSON object"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), r"has no 'cluster' object"),
    (_config({"worker": ["10.0.0.1"]}), r"cluster.worker must be a non-empty list of 'host:port' addresses"),
    (_config({"worker": []}), r"cluster.worker must be a non-empty list"),
    (_config({"ps": ["p:1"]}, "ps"), r"has no 'worker' \(or 'chief'\) list in its cluster"),
    (json.dumps({"cluster": WORKERS}), r"has no 'task' object with 'type' and 'index'"),
    (_config(task_type="chief"), r"task.type 'chief' is not a task type of its cluster \(worker\)"),
    (_config(index=3), r"task.index must be an integer in \[0, 3\) \(cluster.worker has 3 addresses\)"),
    (_config(index="1"), r"task.index must be an integer in \[0, 3\)"),
    (_config({**WORKERS, "ps": ["p:1"]}, "ps"), r"task.type 'ps' does not train under MultiWorkerMirroredStrategy"),
])
def test_a_bad_tf_config_is_refused_with_the_problem_and_the_expected_form(raw, match):
    with pytest.raises(ValueError, match=match):
        parse_tf_config(raw)


def test_a_long_tf_config_is_shortened_in_the_message():
    raw = _config({"worker": ["x" * 300]})
    with pytest.raises(ValueError, match=r"Received: TF_CONFIG='\{.{190,200}\.\.\.'$"):
        parse_tf_config(raw)


def test_multi_worker_without_tf_config_is_refused_before_any_strategy_is_made(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(distribute, "_MULTI_WORKER", None)
    with pytest.raises(ValueError, match=r"TF_CONFIG is not set; strategy=multi_worker needs"):
        distribute.make_strategy("multi_worker")
    assert distribute._MULTI_WORKER is None
    with pytest.raises(ValueError, match=r"strategy must be one of auto, mirrored, multi_worker, default. "
                                         r"Received: strategy='ring'"):
        distribute.make_strategy("ring")


def _fake_multi_worker(task_id, should_checkpoint):
    """What distribute reads of a MultiWorkerMirroredStrategy: its cluster resolver and whether it checkpoints."""
    spec = tf.train.ClusterSpec(WORKERS)
    resolver = types.SimpleNamespace(cluster_spec=lambda: spec, task_type="worker", task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver, num_replicas_in_sync=3,
                                 extended=types.SimpleNamespace(should_checkpoint=should_checkpoint))


def test_the_chief_writes_the_output_dir_and_another_worker_a_temporary_dir_it_removes(tmp_path):
    out = str(tmp_path / "run")
    chief, other = _fake_multi_worker(0, True), _fake_multi_worker(2, False)
    assert distribute.is_chief(chief) and not distribute.is_chief(other)
    assert distribute.worker_write_dir(out, chief) == out
    temp = distribute.worker_write_dir(out, other)
    assert temp != out and os.path.isdir(temp)
    assert os.path.basename(temp).startswith(distribute.WORKER_DIR_PREFIX + "worker2-")
    with open(os.path.join(temp, "training_state.npz"), "w") as f:
        f.write("x")
    distribute.remove_worker_dir(temp, out)
    assert not os.path.exists(temp)
    os.makedirs(out)
    distribute.remove_worker_dir(out, out)  # the chief's directory is the run's: kept
    assert os.path.isdir(out)
    assert distribute.describe(other) == "SimpleNamespace with 3 replica(s), task worker 2"
    assert distribute.describe(chief).endswith("task worker 0 (chief)")


def test_remove_worker_dir_never_removes_a_directory_it_did_not_make(tmp_path):
    other = tmp_path / "someone_elses"
    other.mkdir()
    distribute.remove_worker_dir(str(other), str(tmp_path / "run"))
    assert other.is_dir()


def test_without_multi_worker_distribution_every_helper_leaves_the_run_as_it_is(tmp_path):
    strategy = tf.distribute.get_strategy()
    out = str(tmp_path / "run")
    assert distribute.is_chief(strategy) and not distribute.is_multi_worker(strategy)
    assert distribute.worker_write_dir(out, strategy) == out
    dataset = tf.data.Dataset.range(4)
    assert distribute.shard_by_data(dataset, strategy) is dataset
    distribute.check_same_epoch(strategy, 3, out)  # nothing to compare with


def test_shard_by_data_sets_the_data_policy_under_multi_worker():
    sharded = distribute.shard_by_data(tf.data.Dataset.range(4), _fake_multi_worker(1, False))
    assert sharded.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
