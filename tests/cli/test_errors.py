"""Bad input to any script: one `error:` line on stderr, exit status 2, and nothing written (issue 22)."""

import re
import subprocess
import sys

import pytest

from tests.helpers import ENV

# An absl Python log line (`E1201 11:12:23.456789 1234 common.py:75] ...`): every error used to be printed twice.
_ABSL_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\]")


def run_script(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], env=ENV, capture_output=True, text=True, timeout=300)


def error_lines(stderr):
    """The lines a script printed about the failure: its `error:` lines and any absl Python log line."""
    return [line for line in stderr.splitlines() if line.startswith("error:") or _ABSL_LOG_LINE.match(line)]


def test_a_refused_genotype_is_one_error_line_exit_2_and_no_output_dir(tmp_path):
    """darts-train refuses the genotype before it creates the output directory or writes flags.txt."""
    out = tmp_path / "run"
    proc = run_script("darts_tf.cli.train", "--genotype=NOPE", "--dataset=digits", f"--output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = error_lines(proc.stderr)
    assert line.startswith("error: Unknown CNN genotype name 'NOPE'. Known: ") and "DARTS_V2" in line, line
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--genotype=NOPE"], "error: Unknown CNN genotype name 'NOPE'"),
    (["--genotype={\"normal\": []}"], "error: Genotype is missing field(s) 'normal_concat', 'reduce', 'reduce_concat'"),
    (["--dataset=no_such_dataset"], "error: Unknown dataset 'no_such_dataset'. Known: "),
    (["--epochs=0"], "error: epochs must be >= 1. Received: epochs=0"),
])
def test_darts_train_writes_nothing_when_an_input_is_refused(tmp_path, capsys, args, message):
    """In process (no TensorFlow start-up): config, genotype and dataset are checked before anything is written."""
    from darts_tf.cli import train as train_cli
    from darts_tf.cnn.train import TrainConfig
    from tests.helpers import run_main_in_process

    train_cli.define_config_flags(TrainConfig)
    out = tmp_path / "run"
    code, _, err = run_main_in_process(train_cli.main, ["--dataset=digits", *args, f"--output_dir={out}"], capsys)
    assert code == 2, err
    [line] = error_lines(err)
    assert line.startswith(message), line
    assert not out.exists()


@pytest.mark.parametrize("module", ["darts_tf.cli.search", "darts_tf.cli.predict"])
def test_an_unknown_flag_is_one_error_line_and_exit_2(tmp_path, module):
    out = tmp_path / "run"
    proc = run_script(module, "--no_such_flag=3", f"--output_dir={out}", f"--export_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == ["error: Flags parsing error: Unknown command line flag 'no_such_flag' (--help "
                                        "lists this script's flags)."]
    assert not out.exists()


def test_arguments_a_script_does_not_take_are_one_error_line_and_exit_2(tmp_path):
    """absl's UsageError (exit status 1 and the whole help text before) becomes one line and exit status 2."""
    proc = run_script("darts_tf.cli.export", "--model=nowhere", "extra", "args")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == ["error: Unexpected arguments: extra args"]
    proc = run_script("darts_tf.cli.predict", f"--export_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == ["error: Pass one or more image files after the flags."]


def test_an_unknown_search_preset_is_one_error_line_exit_2_and_no_output_dir(tmp_path):
    out = tmp_path / "run"
    proc = run_script("darts_tf.cli.search", "--preset=bogus", "--dataset=digits", f"--output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == ["error: Unknown search preset 'bogus'. Known presets: darts, nb201, robust."]
    assert not out.exists()
