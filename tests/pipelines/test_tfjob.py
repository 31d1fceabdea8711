"""pipelines.tfjob: the TFJob manifest is valid for the Kubeflow Training Operator's kubeflow.org/v1 schema and
its admission rules, asks for the preset's resources, and runs the stage's script under multi_worker with --resume.

The schema is the TFJob CRD's openAPIV3Schema (tests/pipelines/data/tfjob_v1_openapi_schema.json: the training
operator's manifests/base/crds/kubeflow.org_tfjobs.yaml at release-1.9, descriptions removed; its `source` names the
commit). The CRD leaves the enumerations and a few rules to Go code, taken here from the same commit:
pkg/apis/kubeflow.org/v1/{common_types,tensorflow_types}.go (replica types, restart and clean-pod policies) and
pkg/webhooks/tensorflow/tfjob_webhook.go (a DNS-1035 name, every replica with containers, each with an image, one
named "tensorflow", at most one Chief or Master)."""

import json
import os
import re

import jsonschema
import pytest
import yaml

from darts_tf.cnn.train import ImageNetConfig, TrainConfig
from pipelines import presets, tfjob

IMAGE = "registry.example.com/darts-tf:1.0-gpu"
SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "data", "tfjob_v1_openapi_schema.json")
REPLICA_TYPES = {"Chief", "PS", "Worker", "Evaluator", "Master"}  # tensorflow_types.go
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}  # common_types.go
CLEAN_POD_POLICIES = {"", "All", "Running", "None"}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def validator():
    with open(SCHEMA_PATH) as f:
        doc = json.load(f)
    assert doc["source"].startswith("https://github.com/kubeflow/training-operator/blob/")
    schema = doc["openAPIV3Schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def check_tfjob(job, validator):
    """Raises naming the first rule of the CRD schema or the operator's admission webhook that `job` breaks."""
    errors = sorted(validator.iter_errors(job), key=lambda e: list(e.absolute_path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    name = job["metadata"]["name"]
    assert len(name) <= 63 and DNS_1035.match(name), name
    assert job["spec"]["runPolicy"].get("cleanPodPolicy", "") in CLEAN_POD_POLICIES
    specs = job["spec"]["tfReplicaSpecs"]
    assert specs and set(specs) <= REPLICA_TYPES, set(specs)
    assert sum(t in ("Chief", "Master") for t in specs) <= 1
    for spec in specs.values():
        assert spec.get("restartPolicy", "Never") in RESTART_POLICIES
        containers = spec["template"]["spec"]["containers"]
        assert containers and all(c.get("image") for c in containers)
        assert any(c["name"] == "tensorflow" for c in containers)


def _job(*argv, capsys):
    code = tfjob.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return yaml.safe_load(out)


def _container(job):
    return job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]


def _args(job):
    return dict(a[2:].split("=", 1) if "=" in a else (a[2:], None) for a in _container(job)["args"])


def test_the_paper_evaluate_job_on_4_workers_with_8_gpus_is_a_valid_v1_tfjob(validator, capsys):
    job = _job("--stage", "evaluate", "--workers", "4", "--gpus_per_worker", "8", "--image", IMAGE,
               "--genotype", "gs://b/run/genotype.json", "--output_dir", "gs://b/run/evaluate", capsys=capsys)
    check_tfjob(job, validator)
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 4 and worker["restartPolicy"] == "OnFailure"
    cluster = presets.get_preset("cnn", "paper").cluster
    assert job["spec"]["runPolicy"]["backoffLimit"] == cluster.evaluate.retry.num_retries == 3
    container = _container(job)
    assert container["image"] == IMAGE and container["command"] == ["python", "-m", "darts_tf.cli.train"]
    want = cluster.evaluate.resources
    assert container["resources"] == {
        "requests": {"cpu": want.cpu_request, "memory": want.memory_request},
        "limits": {"cpu": want.cpu_limit, "memory": want.memory_limit, "nvidia.com/gpu": 8}}
    assert container["ports"] == [{"name": "tfjob-port", "containerPort": 2222}]
    args = _args(job)
    assert args["strategy"] == "multi_worker" and "resume" in args
    assert args["output_dir"] == "gs://b/run/evaluate" and args["genotype"] == "gs://b/run/genotype.json"
    paper = TrainConfig()
    assert (args["epochs"], args["layers"], args["batch_size"]) == (str(paper.epochs), str(paper.layers),
                                                                   str(paper.batch_size))
    # every flag is one of darts-train's (a TrainConfig field)
    assert set(args) <= {f for f in TrainConfig.__dataclass_fields__}, set(args) - set(TrainConfig.__dataclass_fields__)


def test_the_transfer_job_runs_darts_train_imagenet_with_the_transfer_resources(validator, capsys):
    job = _job("--stage", "transfer", "--workers", "2", "--image", IMAGE, "--genotype", "DARTS_V2",
               "--output_dir", "/mnt/out", "--data_dir", "gs://b/tensorflow_datasets", capsys=capsys)
    check_tfjob(job, validator)
    container = _container(job)
    assert container["command"][-1] == "darts_tf.cli.train_imagenet"
    want = presets.get_preset("cnn", "paper").cluster.transfer.resources
    assert container["resources"]["limits"] == {"cpu": want.cpu_limit, "memory": want.memory_limit,
                                                "nvidia.com/gpu": want.gpus}
    args = _args(job)
    assert args["data_dir"] == "gs://b/tensorflow_datasets" and args["dataset"] == ImageNetConfig().dataset
    assert set(args) <= set(ImageNetConfig.__dataclass_fields__)


@pytest.mark.parametrize("stage, preset, corpus", [("evaluate", "ptb", "data/penn"),
                                                  ("transfer", "wikitext2", "data/wikitext-2")])
def test_the_rnn_stages_run_darts_rnn_train_with_their_preset_and_corpus(stage, preset, corpus, validator, capsys):
    from darts_tf.cli import rnn_train
    from darts_tf.rnn.train import TrainConfig as RNNTrainConfig

    job = _job("--pipeline", "rnn", "--stage", stage, "--workers", "2", "--gpus_per_worker", "4", "--image", IMAGE,
               "--genotype", "gs://b/rnn/genotype.json", "--output_dir", "gs://b/rnn/" + stage,
               "--set", f"{stage}.overrides={{\"epochs\": 600}}", capsys=capsys)
    check_tfjob(job, validator)
    container = _container(job)
    assert container["command"] == ["python", "-m", "darts_tf.cli.rnn_train"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    args = _args(job)
    assert args["preset"] == preset and args["epochs"] == "600" and args["data_dir"] == corpus
    assert args["strategy"] == "multi_worker" and "resume" in args and args["genotype"] == "gs://b/rnn/genotype.json"
    # every flag is one of darts-rnn-train's: its own (preset, data_dir, ...) or a TrainConfig field
    from absl import flags

    rnn_train.define_flags()
    assert set(args) <= set(flags.FLAGS) and set(args) - {"preset", "data_dir", "output_dir", "resume", "verbose"} <= \
        set(RNNTrainConfig.__dataclass_fields__)
    job = _job("--pipeline", "rnn", "--stage", stage, "--workers", "2", "--image", IMAGE, "--genotype", "DARTS_V2",
               "--output_dir", "/out", "--data_dir", "/mnt/corpus", capsys=capsys)
    assert _args(job)["data_dir"] == "/mnt/corpus"


def test_set_overrides_the_state_volume_and_the_placement_reach_the_manifest(validator, capsys):
    job = _job("--workers", "3", "--image", IMAGE, "--genotype", "DARTS_V2", "--name", "my-eval",
               "--namespace", "team-a", "--set", "evaluate.epochs=300", "--set", "evaluate.batch_size=192",
               "--set", "cluster.state_pvc=darts-state", "--set", "cluster.state_root=/mnt/darts-state",
               "--set", 'evaluate.resources.node_selector={"pool": "a100"}',
               "--set", 'evaluate.resources.tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule",'
                        ' "toleration_seconds": 60}]', capsys=capsys)
    check_tfjob(job, validator)
    assert job["metadata"]["name"] == "my-eval" and job["metadata"]["namespace"] == "team-a"
    args = _args(job)
    assert (args["epochs"], args["batch_size"]) == ("300", "192")
    assert args["output_dir"] == "/mnt/darts-state/my-eval"  # <state_root>/<name>
    pod = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "darts-state", "persistentVolumeClaim": {"claimName": "darts-state"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "darts-state", "mountPath": "/mnt/darts-state"}]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule",
                                   "tolerationSeconds": 60}]


def test_the_schema_check_catches_a_broken_manifest(validator):
    job = tfjob.build_tfjob(presets.get_preset("cnn", "smoke"), "evaluate", workers=2, image=IMAGE,
                            genotype="DARTS_V2", output_dir="/out")
    check_tfjob(job, validator)  # the smoke preset: CPU pods, no GPU limit
    assert "nvidia.com/gpu" not in json.dumps(job)
    job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = "two"
    with pytest.raises(AssertionError, match=r"tfReplicaSpecs/Worker/replicas: 'two' is not of type 'integer'"):
        check_tfjob(job, validator)
    job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = 2
    del job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    with pytest.raises(AssertionError, match=r"'containers' is a required property"):
        check_tfjob(job, validator)


@pytest.mark.parametrize("argv, match", [
    (["--workers", "0"], r"--workers must be >= 1. Received: workers=0"),
    (["--workers", "2", "--gpus_per_worker", "-1"], r"--gpus_per_worker must be >= 0"),
    (["--workers", "2", "--name", "Darts_Eval"], r"--name must be a DNS-1035 label .* Received: name='Darts_Eval'"),
    (["--workers", "2", "--output_dir", ""], r"--output_dir must be set .* or cluster.state_root"),
    (["--workers", "8", "--gpus_per_worker", "16"],
     r"evaluate.batch_size is the global batch, split over 128 replicas \(8 workers x 16\): it must be at least that. "
     r"Received: batch_size=96"),
    (["--workers", "65", "--pipeline", "rnn"],  # the ptb preset's batch, one GPU per pod
     r"evaluate.batch_size is the global batch, split over 65 replicas \(65 workers x 1\): it must be at least that. "
     r"Received: batch_size=64"),
    (["--workers", "3", "--pipeline", "rnn"],
     r"evaluate.batch_size must be a multiple of the 3 replicas for darts-rnn-train \(each replica carries the hidden "
     r"state of its own rows of the text stream\). Received: batch_size=64"),
    (["--workers", "2", "--set", "evaluate.epochs=0"], r"\[stage 'evaluate'\] epochs must be >= 1"),
])
def test_bad_options_are_refused_with_exit_2_and_one_error_line(argv, match, capsys):
    base = ["--image", IMAGE, "--genotype", "DARTS_V2"]
    if "--output_dir" not in argv:
        base += ["--output_dir", "/out"]
    assert tfjob.main(base + argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and re.search(match, err), err
