"""Presets: registered by name, every setting overridable with key=value."""

import pytest

from darts_tf.tasks import get_task
from pipelines import presets


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown preset 'fast' for the cnn pipeline. Known presets: paper, smoke"):
        presets.get_preset("cnn", "fast")
    with pytest.raises(ValueError, match="Unknown pipeline 'gan'"):
        presets.get_preset("gan", "smoke")


def test_paper_preset_has_the_papers_settings():
    cnn = presets.get_preset("cnn", "paper")
    assert (cnn.search.epochs, cnn.search.layers, cnn.search.init_channels, cnn.search.batch_size) == (50, 8, 16, 64)
    assert (cnn.evaluate.layers, cnn.evaluate.init_channels, cnn.evaluate.epochs) == (20, 36, 600)
    assert cnn.transfer.dataset == "imagenet2012" and cnn.transfer.layers == 14 and len(cnn.seeds) == 4
    rnn = presets.get_preset("rnn", "paper")
    assert rnn.search.units == 300 and rnn.evaluate.preset == "ptb" and rnn.transfer.preset == "wikitext2"


def test_smoke_preset_is_tiny_and_offline():
    cnn = presets.get_preset("cnn", "smoke")
    assert cnn.ingest.dataset == "digits" and len(cnn.seeds) <= 2 and cnn.search.layers == 3
    assert presets.get_preset("rnn", "smoke").ingest.dataset == "smoke"


def test_overrides_are_typed():
    config = presets.override(presets.get_preset("cnn", "smoke"), [
        "search.epochs=3", "seeds=[4,5]", "select.learning_rate=1", "evaluate.auxiliary=true", "search.xi=none",
        "search.primitives=none,skip_connect"])
    assert config.search.epochs == 3 and config.seeds == [4, 5]
    assert config.select.learning_rate == 1.0 and isinstance(config.select.learning_rate, float)
    assert config.evaluate.auxiliary is True and config.search.xi is None
    assert config.search.primitives == "none,skip_connect"
    assert presets.override(presets.get_preset("cnn", "smoke"), ["seeds=1,2,3"]).seeds == [1, 2, 3]
    rnn = presets.override(presets.get_preset("rnn", "smoke"), ["select.overrides.units=64"])
    assert rnn.select.overrides["units"] == 64


@pytest.mark.parametrize("assignment, message", [
    ("search.epoch=3", r"Unknown setting 'search.epoch': search has no 'epoch'. Known: .*epochs"),
    ("search.epochs=three", "expects an integer"),
    ("evaluate.auxiliary=maybe", "expects true or false"),
    ("epochs", "expects key=value"),
])
def test_bad_overrides_say_what_is_wrong(assignment, message):
    with pytest.raises(ValueError, match=message):
        presets.override(presets.get_preset("cnn", "smoke"), [assignment])


def test_stage_params_leave_out_stage_owned_and_none_settings():
    params = presets.stage_params(presets.get_preset("cnn", "smoke"))
    assert set(params) == {"seeds", "ingest_config", "search_config", "select_config", "evaluate_config",
                           "transfer_config", "state_root"}  # the cluster settings are compile-time, not parameters
    assert "output_dir" not in params["search_config"] and "xi" not in params["search_config"]
    assert "genotype" not in params["evaluate_config"]


@pytest.mark.parametrize("kind", presets.PIPELINES)
def test_preset_stage_settings_are_the_tasks_configs(kind):
    task = get_task(kind)
    for name in presets.PRESETS[kind]:
        config = presets.get_preset(kind, name)
        assert config.kind == kind and config.description
        for stage in ("search", "select", "evaluate", "transfer"):
            assert type(getattr(config, stage)) is getattr(task, f"{stage}_config"), (name, stage)
        assert hasattr(config, "transfer_ingest") == task.transfer_reads_dataset
