"""Test-wide settings: quiet TensorFlow, CPU only, and a `--runslow` switch for the slow set."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    if config.getoption("--runslow"):
        # drop the default "-m 'not slow'" filter from pyproject's addopts
        config.option.markexpr = ""
