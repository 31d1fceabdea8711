"""The Dockerfile, parsed (no Docker engine here): a pinned base, `cpu` and `gpu` targets that run as a non-root user,
no test tools in the runtime images, the GPU TensorFlow installed under the requirements' pins, and only files that
exist copied in."""

import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_TOOLS = ("pytest", "pytest-xdist")


def _instructions(text):
    """(instruction, arguments) per Dockerfile line, continuations joined, comments dropped."""
    joined, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


@pytest.fixture(scope="module")
def dockerfile():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        return _instructions(f.read())


def _stages(instructions):
    """Stage name -> {'from': base, 'lines': [(instruction, args), ...]}; global ARGs under None."""
    stages, current = {None: {"from": None, "lines": []}}, None
    for instruction, args in instructions:
        if instruction == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            current = match.group(2)
            stages[current] = {"from": match.group(1), "lines": []}
        else:
            stages[current]["lines"].append((instruction, args))
    return stages


def _global_args(stages):
    return dict(a.split("=", 1) for i, a in stages[None]["lines"] if i == "ARG" and "=" in a)


def _lineage(stages, name):
    """The stage and the stages it is built FROM, nearest first."""
    chain = []
    while name in stages:
        chain.append(name)
        name = stages[name]["from"]
    return chain


def test_the_base_image_is_pinned_to_an_exact_python_and_debian_release(dockerfile):
    stages = _stages(dockerfile)
    base = _global_args(stages)["PYTHON_IMAGE"].strip('"')
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    external = {s["from"] for n, s in stages.items() if n and s["from"] not in stages}
    assert external == {"${PYTHON_IMAGE}"}  # every stage starts from the pinned base or another stage


def test_cpu_and_gpu_targets_run_as_a_non_root_user(dockerfile):
    stages = _stages(dockerfile)
    assert {"cpu", "gpu"} <= set(stages)
    assert list(stages)[-1] == "cpu"  # a plain `docker build .` builds the CPU image
    for target in ("cpu", "gpu"):
        users = [a for n in _lineage(stages, target)[::-1] for i, a in stages[n]["lines"] if i == "USER"]
        assert users and users[-1] not in ("root", "0"), target
    runtime = " ".join(a for i, a in stages["runtime"]["lines"] if i == "RUN")
    assert "useradd --uid 1000" in runtime


def test_no_test_tools_in_the_runtime_images(dockerfile):
    stages = _stages(dockerfile)
    for target in ("cpu", "gpu"):
        chain = _lineage(stages, target)
        commands = [a for n in chain for i, a in stages[n]["lines"] if i == "RUN"]
        installs = [c for c in commands if "pip install" in c]
        assert any("runtime-requirements.txt" in c or "gpu-requirements.txt" in c for c in installs), target
        for command in installs:
            words = shlex.split(command.replace("&&", " ; "))
            assert not set(words) & set(TEST_TOOLS), (target, command)
            # requirements.txt itself (which pins the test tools) is only ever a constraints file
            assert not re.search(r"-r\s+\S*/requirements\.txt", command), (target, command)
        assert any("! python -c \"import pytest\"" in c for c in commands), target
    strip = " ".join(a for i, a in stages["runtime"]["lines"] if i == "RUN" and "runtime-requirements" in a)
    assert all(tool in strip for tool in TEST_TOOLS)  # grep -v of the test tools' pins


def test_the_gpu_image_installs_tensorflow_with_cuda_under_the_requirements_pins(dockerfile):
    stages = _stages(dockerfile)
    gpu = " ".join(a for i, a in stages["gpu"]["lines"] if i in ("RUN", "ARG"))
    assert "tensorflow[and-cuda]==2.21.0" in gpu
    assert re.search(r"pip install -c \S*requirements\.txt", gpu)
    assert "grep -v -E '^tensorflow-cpu=='" in gpu
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        pins = dict(line.strip().split("==") for line in f if "==" in line and not line.startswith("#"))
    assert pins["tensorflow-cpu"] == "2.21.0" and "kfp-kubernetes" in pins


def test_only_the_wheel_reaches_the_runtime_images_and_the_copied_files_exist(dockerfile):
    stages = _stages(dockerfile)
    for name, stage in stages.items():
        for instruction, args in stage["lines"]:
            if instruction == "COPY" and "--from=" not in args:
                for source in shlex.split(args)[:-1]:
                    assert os.path.exists(os.path.join(ROOT, source)), (name, source)
    for target in ("cpu", "gpu"):
        copies = [a for i, a in stages[target]["lines"] if i == "COPY"]
        assert copies == ["--from=wheel /wheels /tmp/wheels"], target
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    assert "tests/" in ignored and not {"setup.py", "README.md", "pyproject.toml"} & ignored
