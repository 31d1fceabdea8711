"""darts_tf.graph_options: the traced steps run one round of Grappler without its memory optimizer unless TensorFlow's
defaults are asked for (issue 23)."""

import os
import subprocess
import sys

import pytest
from tensorflow.core.protobuf import rewriter_config_pb2

from darts_tf import checkpoint, graph_options

RewriterConfig = rewriter_config_pb2.RewriterConfig
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = (RewriterConfig.NO_MEM_OPT, RewriterConfig.ONE, RewriterConfig.OFF)
TENSORFLOWS = (RewriterConfig.DEFAULT_MEM_OPT, RewriterConfig.DEFAULT_NUM_ITERS, RewriterConfig.DEFAULT)


def settings(config=None):
    rewrite = (config or graph_options.function_config()).graph_options.rewrite_options
    return rewrite.memory_optimization, rewrite.meta_optimizer_iterations, rewrite.dependency_optimization


def test_apply_sets_the_function_call_config(monkeypatch):
    monkeypatch.delenv(graph_options.DEFAULTS_ENV, raising=False)
    try:
        assert settings(graph_options.apply_graph_options(tensorflow_defaults=True)) == TENSORFLOWS
        assert settings() == TENSORFLOWS
        graph_options.apply_graph_options()
        assert settings() == OURS
        monkeypatch.setenv(graph_options.DEFAULTS_ENV, "1")
        graph_options.apply_graph_options()
        assert settings() == TENSORFLOWS
    finally:
        graph_options.apply_graph_options(tensorflow_defaults=False)


def test_start_run_applies_it(monkeypatch):
    monkeypatch.delenv(graph_options.DEFAULTS_ENV, raising=False)
    graph_options.apply_graph_options(tensorflow_defaults=True)
    checkpoint.start_run(0)
    assert settings() == OURS


def test_bad_environment_value_names_the_choices(monkeypatch):
    monkeypatch.setenv(graph_options.DEFAULTS_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"DARTS_TF_GRAPPLER_DEFAULTS must be 1/true/yes/on \(TensorFlow's Grappler "
                                         r"settings.* or 0/false/no/off "
                                         r".*Received: DARTS_TF_GRAPPLER_DEFAULTS='sometimes'"):
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


@pytest.mark.parametrize("tensorflow_defaults", [False, True])
def test_grappler_log_of_a_keras_fit(tensorflow_defaults):
    """TensorFlow's own log of Grappler's passes for Keras' train function: by default one round (each pass once) and
    no memory_optimizer or dependency_optimizer; with DARTS_TF_GRAPPLER_DEFAULTS=1 two rounds and both."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "meta_optimizer=1",
           graph_options.DEFAULTS_ENV: "1" if tensorflow_defaults else "0", "PYTHONPATH": REPO}
    run = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stderr
    start = log.index("Starting optimization for grappler item: __inference_multi_step_on_iterator")
    item = log[start:log.index("FIT_DONE")].split("Starting optimization for grappler item:")[1]
    assert ("memory_optimizer:" in item) == tensorflow_defaults
    assert ("dependency_optimizer:" in item) == tensorflow_defaults
    assert item.count("remapper:") == (2 if tensorflow_defaults else 1)  # the passes of each round
