"""Shared by the script tests: an absl main run in this process, and a script run as a subprocess."""

import os
import re
import subprocess
import sys

from absl import flags

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
# An absl error or fatal log line (`E1201 11:12:23.456789 1234 common.py:75] ...`).
_ABSL_ERROR_LINE = re.compile(r"^[EF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\]")


def failure_lines(stderr):
    """The lines a script printed about a failure: its `error:` lines and any absl error/fatal log line (its
    progress, logged as absl info lines before the failure, is not counted)."""
    return [line for line in stderr.splitlines() if line.startswith("error:") or _ABSL_ERROR_LINE.match(line)]


def run_main_in_process(main, argv, capsys):
    """Runs an absl main (its flags already defined) in this process (saves a TensorFlow start-up); returns
    (exit code, stdout, stderr)."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog", *argv])
    code = 0
    try:
        main(["prog"])
    except SystemExit as e:
        code = e.code
    finally:
        flags.FLAGS.unparse_flags()
    out = capsys.readouterr()
    return code, out.out, out.err


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args, timeout=300):
    """`python -m module args` on the CPU, from the repository root; asserts that it exits 0."""
    proc = subprocess.run([sys.executable, "-m", module, *args], env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def module_report(module, *args, timeout=900):
    """The JSON object a test module run as a script (a child process of its own: e.g. with logical devices configured
    before TensorFlow starts) prints as its last line."""
    import json

    return json.loads(run_module(module, *args, timeout=timeout).stdout.strip().splitlines()[-1])


def cosine(a, b) -> float:
    """The cosine between two lists of arrays, each flattened and concatenated (gradient agreement)."""
    import numpy as np

    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
