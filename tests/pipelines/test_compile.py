"""The compiled Kubeflow YAML: five stages, the ParallelFor over seeds, artifacts between stages, the image."""

import pytest
import yaml

from pipelines import compile as compile_cli

IMAGE = "registry.example.com/darts-tf:1.0"


@pytest.fixture(scope="module", params=["cnn", "rnn"])
def spec(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("yaml") / f"{request.param}.yaml"
    assert compile_cli.main(["--pipeline", request.param, "--image", IMAGE, "--output", str(out)]) == 0
    with open(out) as f:
        return request.param, yaml.safe_load(f)


def _all_tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_names_the_stages_and_the_parallel_for(spec):
    kind, spec = spec
    tasks = _all_tasks(spec)
    for stage in ("ingest", "search", "derive", "select", "evaluate"):
        assert stage in tasks, sorted(tasks)
    assert "transfer" in tasks or "transfer-text" in tasks
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 1 and loops[0]["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--seeds"
    assert set(tasks[name]["componentRef"]["name"] for name in ("search", "derive")) == {"comp-search", "comp-derive"}


def test_stages_pass_artifacts_not_strings(spec):
    kind, spec = spec
    tasks = _all_tasks(spec)
    assert tasks["search"]["inputs"]["artifacts"]["dataset"]["componentInputArtifact"]
    assert tasks["derive"]["inputs"]["artifacts"]["search_run"]["taskOutputArtifact"]["producerTask"] == "search"
    select_inputs = tasks["select"]["inputs"]["artifacts"]
    assert select_inputs["candidates"]["taskOutputArtifact"]["producerTask"] == "for-loop-1"  # dsl.Collected
    assert select_inputs["dataset"]["taskOutputArtifact"]["producerTask"] == "ingest"
    assert tasks["evaluate"]["inputs"]["artifacts"]["genotype"]["taskOutputArtifact"] == {
        "outputArtifactKey": "best_genotype", "producerTask": "select"}
    transfer = tasks.get("transfer") or tasks["transfer-text"]
    assert transfer["inputs"]["artifacts"]["genotype"]["taskOutputArtifact"]["producerTask"] == "select"
    outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"]
    assert outputs["model"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    candidates = spec["components"]["comp-select"]["inputDefinitions"]["artifacts"]["candidates"]
    assert candidates["isArtifactList"] is True


def test_every_component_runs_in_the_image_and_calls_the_library(spec):
    kind, spec = spec
    executors = spec["deploymentSpec"]["executors"]
    assert executors and all(e["container"]["image"] == IMAGE for e in executors.values())
    for name, executor in executors.items():
        source = "\n".join(executor["container"]["command"])
        assert "from darts_tf_pipelines.components import" in source, name  # the installed name (setup.py)


def test_preset_settings_are_the_parameter_defaults(spec):
    kind, spec = spec
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["seeds"]["defaultValue"] == [1, 2, 3, 4]  # the paper preset by default
    assert params["search_config"]["parameterType"] == "STRUCT"


def test_one_pipeline_body_with_a_second_ingest_where_the_task_transfers_on_another_dataset(spec):
    kind, spec = spec
    tasks = _all_tasks(spec)
    ingests = {name: t for name, t in tasks.items() if t["componentRef"]["name"].startswith("comp-ingest")}
    for name in ("search", "select", "evaluate", "transfer-text" if kind == "rnn" else "transfer"):
        assert tasks[name]["inputs"]["parameters"]["kind"]["runtimeValue"]["constant"] == kind, name
    if kind == "cnn":
        assert list(ingests) == ["ingest"] and "transfer-text" not in tasks
        assert "dataset" not in tasks["transfer"]["inputs"].get("artifacts", {})
    else:
        (other,) = [name for name, t in ingests.items() if t["taskInfo"]["name"] == "ingest-transfer"]
        assert tasks["transfer-text"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]["producerTask"] == other
        assert "transfer" not in tasks
    assert tasks["transfer" if kind == "cnn" else "transfer-text"]["dependentTasks"] == sorted(
        ["evaluate", "select"] + ([other] if kind == "rnn" else []))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert ("transfer_ingest_config" in params) == (kind == "rnn")
    assert spec["pipelineInfo"]["name"] == f"darts-{kind}"


def test_build_pipeline_refuses_an_unknown_kind():
    from pipelines.dag import build_pipeline

    with pytest.raises(ValueError, match="Unknown pipeline 'gan'. Known: cnn, rnn"):
        build_pipeline("gan")


def test_compile_refuses_a_bad_override(tmp_path, capsys):
    assert compile_cli.main(["--image", IMAGE, "--output", str(tmp_path / "x.yaml"), "--set", "bogus=1"]) == 2
    assert "Unknown setting 'bogus'" in capsys.readouterr().err
