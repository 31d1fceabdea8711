"""Every stage's settings are checked before any stage runs (issue 22): an impossible one fails in seconds, before
ingest, with one `error:` line naming the stage and the setting, exit status 2."""

import pytest

from pipelines import presets
from pipelines import run as pipeline_run


@pytest.mark.parametrize("pipeline, setting, message", [
    ("cnn", "search.epochs=0", "error: [stage 'search'] --epochs must be >= 1. Received: epochs=0 (a setting of --set "
                               "search.NAME=VALUE)"),
    ("rnn", "search.epochs=0", "error: [stage 'search'] --epochs must be >= 1. Received: epochs=0 (a setting of --set "
                               "search.NAME=VALUE)"),
    ("cnn", "evaluate.learning_rate=-1", "error: [stage 'evaluate'] learning_rate must be > 0. Received: "
                                         "learning_rate=-1.0 (a setting of --set evaluate.NAME=VALUE)"),
])
def test_an_impossible_setting_fails_before_any_stage_runs(tmp_path, capsys, pipeline, setting, message):
    root = tmp_path / "root"
    assert pipeline_run.main(["--pipeline", pipeline, "--root", str(root), "--set", setting]) == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert not root.exists()  # no ingest output, no config file, no cache


def test_run_pipeline_checks_the_settings_before_it_writes_anything(tmp_path):
    config = presets.override(presets.get_preset("cnn", "smoke"), ["select.validation_portion=1.5"])
    with pytest.raises(ValueError, match=r"^\[stage 'select'\] validation_portion must be in \[0, 1\)"):
        pipeline_run.run_pipeline("cnn", str(tmp_path / "root"), config)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("pipeline", presets.PIPELINES)
@pytest.mark.parametrize("preset", ["smoke", "paper"])
def test_the_registered_presets_pass_the_checks(pipeline, preset):
    config = presets.get_preset(pipeline, preset)
    assert presets.validate_stages(config) is config
