"""The search scripts' mode flags: absl enum flags, refused when the command line is parsed."""

import dataclasses
import subprocess
import sys

import pytest

from tests.helpers import ENV


@pytest.mark.parametrize("module, flag, allowed", [
    ("darts_tf.cli.search", "--arch_mode=bogus", "<first_order|second_order_exact|second_order_fd>"),
    ("darts_tf.cli.search", "--exact_hvp=sideways", "<reverse|forward>"),
    ("darts_tf.cli.rnn_search", "--arch_mode=bogus", "<first_order|second_order_exact|second_order_fd>"),
])
def test_a_bad_mode_is_refused_when_the_flags_are_parsed(tmp_path, module, flag, allowed):
    """A flag-parsing error (exit status 2, like every bad input; before the script's main runs: nothing is written),
    naming the values."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", module, f"--output_dir={out}", flag], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"Flags parsing error: flag {flag}: value should be one of {allowed}" in proc.stderr
    assert not out.exists()


def test_a_field_with_choices_becomes_an_enum_flag_with_the_fields_help():
    """dataclass_flags knows no field by name: `choices` and `help` come from the field's metadata, which the search
    configs take from darts_tf.bilevel.FLAG_METADATA."""
    from absl import flags

    from darts_tf.bilevel import ARCH_MODES, EXACT_HVP_METHODS, FLAG_METADATA
    from darts_tf.cli import common
    from darts_tf.cnn import search as cnn_search
    from darts_tf.rnn import search as rnn_search

    @dataclasses.dataclass
    class Modes:
        test_flags_mode: str = dataclasses.field(default="a", metadata={"choices": ("a", "b"), "help": "Pick one."})

    common.define_flags_from_dataclass(Modes)
    try:
        flag = flags.FLAGS["test_flags_mode"]
        assert flag.parser.enum_values == ["a", "b"] and flag.help.endswith("Pick one.") and flag.value == "a"
        with pytest.raises(flags.IllegalFlagValueError, match=r"value should be one of <a\|b>"):
            flag.parse("c")
    finally:
        delattr(flags.FLAGS, "test_flags_mode")
    for config in (cnn_search.SearchConfig, rnn_search.SearchConfig):
        fields = {f.name: f.metadata for f in dataclasses.fields(config)}
        assert fields["arch_mode"] == FLAG_METADATA["arch_mode"] and fields["arch_mode"]["choices"] == ARCH_MODES
    assert {f.name: f.metadata for f in dataclasses.fields(cnn_search.SearchConfig)}["exact_hvp"]["choices"] == \
        EXACT_HVP_METHODS
