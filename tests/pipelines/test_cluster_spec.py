"""The compiled YAML of both pipelines and both presets, read back: per-task resources (CPU / memory requests and
limits, accelerator type and count), retry policies, integer parameter types (the seed loop's items included), the
Markdown / HTML artifacts, the CPU and GPU images, the state parameters of the resumable stages; and --set /
--accelerator / --parallelism reaching the YAML."""

import pytest
import yaml

from pipelines import compile as compile_cli
from pipelines import presets

CPU_IMAGE, GPU_IMAGE = "registry.example.com/darts-tf:1.0-cpu", "registry.example.com/darts-tf:1.0-gpu"
TRAINING = ("search", "select", "evaluate", "transfer")


def _compile(tmp_path_factory, kind, preset, *extra):
    out = tmp_path_factory.mktemp("yaml") / f"{kind}-{preset}.yaml"
    argv = ["--pipeline", kind, "--preset", preset, "--image", CPU_IMAGE, "--gpu_image", GPU_IMAGE, "--output",
            str(out), *extra]
    assert compile_cli.main(argv) == 0
    with open(out) as f:
        docs = list(yaml.safe_load_all(f))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.fixture(scope="module", params=[(k, p) for k in presets.PIPELINES for p in ("paper", "smoke")],
                ids=lambda kp: "-".join(kp))
def compiled(request, tmp_path_factory):
    kind, preset = request.param
    spec, platform = _compile(tmp_path_factory, kind, preset)
    return kind, preset, spec, platform


def _tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def _transfer(kind):
    return "transfer-text" if kind == "rnn" else "transfer"


def _executor(spec, task_name):
    """The container of a task (task -> component -> executor)."""
    component = spec["components"][_tasks(spec)[task_name]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def test_every_task_asks_for_the_presets_cpu_and_memory(compiled):
    kind, preset, spec, _ = compiled
    cluster = presets.get_preset(kind, preset).cluster
    for task, stage in [("ingest", "ingest"), ("derive", "derive"), *((s, s) for s in TRAINING[:-1]),
                        (_transfer(kind), "transfer")]:
        want = cluster.runtime(stage).resources
        got = _executor(spec, task)["resources"]
        assert (got["resourceCpuRequest"], got["resourceCpuLimit"]) == (want.cpu_request, want.cpu_limit), task
        assert (got["resourceMemoryRequest"], got["resourceMemoryLimit"]) == (want.memory_request,
                                                                            want.memory_limit), task


def test_the_training_stages_ask_for_gpus_in_the_paper_preset_and_run_in_the_gpu_image(compiled):
    kind, preset, spec, _ = compiled
    for task in ("search", "select", "evaluate", _transfer(kind)):
        container = _executor(spec, task)
        accelerator = container["resources"].get("accelerator")
        if preset == "paper":
            assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1", task
            assert container["image"] == GPU_IMAGE, task
        else:
            assert accelerator is None and container["image"] == CPU_IMAGE, task
    for task in ("ingest", "derive"):  # CPU only, in the small image
        container = _executor(spec, task)
        assert "accelerator" not in container["resources"] and container["image"] == CPU_IMAGE, task


def test_the_long_stages_retry_with_backoff(compiled):
    kind, preset, spec, _ = compiled
    cluster = presets.get_preset(kind, preset).cluster
    tasks = _tasks(spec)
    for task, stage in [("search", "search"), ("evaluate", "evaluate"), (_transfer(kind), "transfer")]:
        policy, want = tasks[task]["retryPolicy"], cluster.runtime(stage).retry
        assert policy["maxRetryCount"] == want.num_retries >= 1, task
        assert (policy["backoffDuration"], policy["backoffFactor"], policy["backoffMaxDuration"]) == (
            want.backoff_duration, want.backoff_factor, want.backoff_max_duration), task


def test_integers_are_typed_as_integers_and_the_seed_loop_items_too(compiled):
    kind, preset, spec, _ = compiled
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["seeds"]["parameterType"] == "LIST"
    assert root["seeds"]["defaultValue"] == presets.get_preset(kind, preset).seeds
    assert spec["components"]["comp-search"]["inputDefinitions"]["parameters"]["seed"]["parameterType"] == \
        "NUMBER_INTEGER"
    (loop,) = [c for name, c in spec["components"].items() if name.startswith("comp-for-loop")]
    loop_params = loop["inputDefinitions"]["parameters"]
    assert loop_params["pipelinechannel--seeds-loop-item"]["parameterType"] == "NUMBER_INTEGER"
    assert _tasks(spec)["search"]["inputs"]["parameters"]["seed"] == {
        "componentInputParameter": "pipelinechannel--seeds-loop-item"}
    for name in ("search_config", "evaluate_config"):  # dicts are STRUCTs; the stage turns their numbers back
        assert root[name]["parameterType"] == "STRUCT"


def test_the_genotype_pictures_and_selection_table_are_markdown_and_html_artifacts(compiled):
    _, _, spec, _ = compiled
    derive = spec["components"]["comp-derive"]["outputDefinitions"]["artifacts"]
    assert derive["genotype_card"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert derive["cell_pictures"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert derive["genotype"]["artifactType"]["schemaTitle"] == "system.Artifact"  # beside the stage's own artifacts
    select = spec["components"]["comp-select"]["outputDefinitions"]["artifacts"]
    assert select["selection_table"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert select["genotype_card"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert select["selection"]["artifactType"]["schemaTitle"] == "system.Metrics"


def test_the_resumable_stages_get_the_run_id_task_name_and_state_root(compiled):
    kind, _, spec, _ = compiled
    tasks = _tasks(spec)
    for task in ("search", "evaluate", _transfer(kind)):
        params = tasks[task]["inputs"]["parameters"]
        assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}", task
        assert params["task"]["runtimeValue"]["constant"] == "{{$.pipeline_task_name}}", task
        assert "state_root" in str(params["state_root"]), task
    assert spec["root"]["inputDefinitions"]["parameters"]["state_root"]["parameterType"] == "STRING"


def test_set_accelerator_and_parallelism_reach_the_yaml(tmp_path_factory):
    spec, platform = _compile(
        tmp_path_factory, "cnn", "paper", "--set", "evaluate.resources.gpus=8", "--accelerator", "amd.com/gpu",
        "--set", "search.retry.num_retries=5", "--set", "search.retry.backoff_duration=120s",
        "--set", "derive.resources.memory_limit=3Gi", "--parallelism", "2",
        "--set", 'search.resources.node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"}',
        "--set", 'search.resources.tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", '
                 '"effect": "NoSchedule"}]',
        "--set", "cluster.state_root=/mnt/darts-state", "--set", "cluster.state_pvc=darts-state")
    evaluate = _executor(spec, "evaluate")["resources"]["accelerator"]
    assert (evaluate["resourceType"], evaluate["resourceCount"]) == ("amd.com/gpu", "8")
    assert _executor(spec, "search")["resources"]["accelerator"]["resourceType"] == "amd.com/gpu"
    assert _executor(spec, "derive")["resources"]["resourceMemoryLimit"] == "3Gi"
    tasks = _tasks(spec)
    assert tasks["search"]["retryPolicy"]["maxRetryCount"] == 5
    assert tasks["search"]["retryPolicy"]["backoffDuration"] == "120s"
    (loop,) = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 2
    assert spec["root"]["inputDefinitions"]["parameters"]["state_root"]["defaultValue"] == "/mnt/darts-state"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-search"]["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert executors["exec-search"]["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu",
                                                        "operator": "Exists"}]
    for name in ("exec-search", "exec-evaluate", "exec-transfer"):  # only the resumable stages mount the state
        (mount,) = executors[name]["pvcMount"]
        assert mount["mountPath"] == "/mnt/darts-state" and mount["constant"] == "darts-state", name
    assert "pvcMount" not in executors.get("exec-select", {})


def test_without_gpu_image_every_stage_runs_in_the_one_image(tmp_path):
    out = tmp_path / "cnn.yaml"
    assert compile_cli.main(["--pipeline", "cnn", "--image", CPU_IMAGE, "--output", str(out)]) == 0
    spec = yaml.safe_load(out.read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {CPU_IMAGE}


@pytest.mark.parametrize("assignment, message", [
    ("derive.resources.gpus=1", "the derive stage runs on CPU only"),
    ("search.resources.cpu_request=lots", "must be a Kubernetes quantity"),
    ("search.retry.num_retries=-1", "num_retries must be >= 0"),
    ("search.retry.backoff_duration=1m", "must be seconds like '60s'"),
    ("cluster.state_pvc=claim", "must then be an absolute path"),
    ("seeds=[1,1]", "seeds must be distinct integers"),
])
def test_compile_refuses_bad_cluster_settings(tmp_path, capsys, assignment, message):
    assert compile_cli.main(["--image", CPU_IMAGE, "--output", str(tmp_path / "x.yaml"), "--set", assignment]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()
