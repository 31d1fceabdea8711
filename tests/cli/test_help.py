"""`--help` of every console script lists that script's own flags (issue 22: it printed only "Try --helpfull")."""

import os
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
    ALL_SCRIPTS = tomllib.load(_f)["project"]["scripts"]
SCRIPTS = {name: target for name, target in ALL_SCRIPTS.items() if target.startswith("darts_tf.cli.")}  # absl
PIPELINE_SCRIPTS = sorted(set(ALL_SCRIPTS) - set(SCRIPTS))  # argparse

# One flag of each script, looked for among the key flags that --help lists under the script's name.
OWN_FLAG = {
    "darts-search": "arch_mode", "darts-train": "genotype", "darts-train-imagenet": "learning_rate_decay",
    "darts-test": "split", "darts-export": "export_dir", "darts-predict": "top_k", "darts-visualize": "kind",
    "darts-derive": "search_dir", "darts-rnn-search": "nodes", "darts-rnn-train": "preset", "darts-rnn-test": "model",
}

# What the installer's wrapper does: __main__ is a module without a docstring or flags, argv[0] the script name.
_WRAPPER = "import sys; sys.argv[0] = {name!r}; from {module} import {attr}; sys.exit({attr}())"


def console_help(name):
    module, attr = SCRIPTS[name].split(":")
    return subprocess.run([sys.executable, "-c", _WRAPPER.format(name=name, module=module, attr=attr), "--help"],
                          env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_every_console_script_has_an_own_flag_to_look_for():
    assert sorted(OWN_FLAG) == sorted(SCRIPTS)


@pytest.mark.parametrize("name", sorted(OWN_FLAG))
def test_help_lists_the_scripts_own_flags_under_its_docstring(name):
    proc = console_help(name)
    assert proc.returncode == 0, proc.stderr[-2000:]  # a request for help is not a failure (absl exits 1)
    out = proc.stdout
    assert out.startswith(f"{name}: "), out[:500]  # the script module's docstring, not "USAGE: ..."
    flags_section = out.split("\nflags:\n", 1)[1]
    assert f"\n{name}:\n" in flags_section, out[-2000:]
    assert f"\n  --{OWN_FLAG[name]}: " in flags_section.split("\nTry --helpfull", 1)[0], out[-2000:]


@pytest.mark.parametrize("flag", ["-h", "--helpfull", "--helpshort"])
def test_every_help_flag_exits_0(flag):
    proc = console_help("darts-derive") if flag == "-h" else subprocess.run(
        [sys.executable, "-m", "darts_tf.cli.derive", flag], env=ENV, capture_output=True, text=True, timeout=300,
        cwd=ROOT)
    assert proc.returncode == 0 and "--search_dir" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_the_pipeline_scripts_are_the_two_pipeline_commands():
    assert PIPELINE_SCRIPTS == ["darts-pipeline-compile", "darts-pipeline-run"]


@pytest.mark.parametrize("name", PIPELINE_SCRIPTS)
def test_the_pipeline_scripts_help_exits_0_and_lists_their_options(name):
    module, attr = ALL_SCRIPTS[name].split(":")
    proc = subprocess.run([sys.executable, "-c", _WRAPPER.format(name=name, module=module, attr=attr), "--help"],
                          env=ENV, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and "--pipeline" in proc.stdout and "--set" in proc.stdout, proc.stderr[-2000:]
