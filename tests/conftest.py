"""Test-wide settings: quiet TensorFlow, CPU only, and a `--runslow` switch for the slow set."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    if config.getoption("--runslow"):
        # drop the default "-m 'not slow'" filter from pyproject's addopts
        config.option.markexpr = ""


@pytest.fixture
def float64():
    """Keras' float type and dtype policy set to float64 for the test (the gradient checks), restored after it."""
    import keras

    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield "float64"
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)
