"""darts_tf.graph_options: Grappler's memory optimizer is off for the traced steps unless asked for (issue 23)."""

import os
import subprocess
import sys

import pytest
from tensorflow.core.protobuf import rewriter_config_pb2

from darts_tf import checkpoint, graph_options

RewriterConfig = rewriter_config_pb2.RewriterConfig
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def memory_setting():
    return graph_options.function_config().graph_options.rewrite_options.memory_optimization


def test_apply_sets_the_function_call_config(monkeypatch):
    monkeypatch.delenv(graph_options.MEMORY_OPTIMIZER_ENV, raising=False)
    try:
        assert graph_options.apply_graph_options(memory_optimizer=True).graph_options.rewrite_options \
            .memory_optimization == RewriterConfig.DEFAULT_MEM_OPT
        assert memory_setting() == RewriterConfig.DEFAULT_MEM_OPT
        graph_options.apply_graph_options()
        assert memory_setting() == RewriterConfig.NO_MEM_OPT
        monkeypatch.setenv(graph_options.MEMORY_OPTIMIZER_ENV, "1")
        graph_options.apply_graph_options()
        assert memory_setting() == RewriterConfig.DEFAULT_MEM_OPT
    finally:
        graph_options.apply_graph_options(memory_optimizer=False)


def test_start_run_applies_it(monkeypatch):
    monkeypatch.delenv(graph_options.MEMORY_OPTIMIZER_ENV, raising=False)
    graph_options.apply_graph_options(memory_optimizer=True)
    checkpoint.start_run(0)
    assert memory_setting() == RewriterConfig.NO_MEM_OPT


def test_bad_environment_value_names_the_choices(monkeypatch):
    monkeypatch.setenv(graph_options.MEMORY_OPTIMIZER_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"DARTS_TF_GRAPPLER_MEMORY_OPTIMIZER must be 1/true/yes/on .* or 0/false/no/off "
                                         r".*Received: DARTS_TF_GRAPPLER_MEMORY_OPTIMIZER='sometimes'"):
        graph_options.apply_graph_options()


_SCRIPT = r"""
import sys
import keras, numpy as np, tensorflow as tf
from darts_tf import checkpoint
checkpoint.start_run(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
model.fit(np.ones((8, 8), np.float32), np.ones((8, 1), np.float32), epochs=1, verbose=0)
print("FIT_DONE", file=sys.stderr)
"""


@pytest.mark.parametrize("wanted", [False, True])
def test_grappler_skips_the_pass_in_a_keras_fit(wanted):
    """TensorFlow's own log of Grappler's passes for Keras' train function: no memory_optimizer line by default."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "meta_optimizer=1",
           graph_options.MEMORY_OPTIMIZER_ENV: "1" if wanted else "0", "PYTHONPATH": REPO}
    run = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stderr
    start = log.index("Starting optimization for grappler item: __inference_multi_step_on_iterator")
    item = log[start:log.index("FIT_DONE")].split("Starting optimization for grappler item:")[1]
    assert "remapper" in item  # Grappler did optimise the train function
    assert ("memory_optimizer" in item) == wanted
