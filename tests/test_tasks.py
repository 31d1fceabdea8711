"""The task registry and the interface every task family exposes (darts_tf.tasks, darts_tf/*/task.py)."""

import dataclasses
import inspect

import numpy as np
import pytest

from components import artifacts
from darts_tf import tasks
from darts_tf.data.images import ImageData
from darts_tf.data.text import Corpus

KINDS = ("cnn", "rnn")


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 12).astype(np.int64)
    data = ImageData(x, y, x[:4], y[:4], 10, "tiny", (0.5,), (0.25,))
    return artifacts.write_image_dataset(str(tmp_path_factory.mktemp("images") / "ds"), data)


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    for name in ("train", "valid", "test"):
        (root / f"{name}.txt").write_text(" a b c \n d e \n")
    return artifacts.write_text_dataset(str(root / "ds"), str(root), "toy")


def test_get_task_returns_the_task_of_each_kind():
    assert tasks.known_kinds() == KINDS
    for kind in KINDS:
        task = tasks.get_task(kind)
        assert isinstance(task, tasks.Task) and task.kind == kind


def test_an_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown task kind 'gan'\. Known kinds: cnn, rnn\."):
        tasks.get_task("gan")


def test_a_kind_has_one_task():
    cnn = type(tasks.get_task("cnn"))
    other = type("OtherCNNTask", (cnn,), {})
    with pytest.raises(ValueError, match="task of kind 'cnn' is already registered"):
        tasks.register_task(other)
    assert tasks.register_task(cnn) is cnn  # registering the same class again is harmless


def _public_methods(cls):
    return {name: inspect.signature(getattr(cls, name)) for name in dir(cls)
            if not name.startswith("_") and inspect.isfunction(getattr(cls, name))}


def test_both_tasks_expose_the_same_interface():
    cnn, rnn = (type(tasks.get_task(kind)) for kind in KINDS)
    assert not cnn.__abstractmethods__ and not rnn.__abstractmethods__
    base = _public_methods(tasks.Task)
    assert _public_methods(cnn).keys() == _public_methods(rnn).keys() == base.keys()
    for name, signature in base.items():
        names = list(signature.parameters)
        assert list(_public_methods(cnn)[name].parameters) == names, name
        assert list(_public_methods(rnn)[name].parameters) == names, name
    for attribute in tasks.Task.__annotations__:
        values = [getattr(cls, attribute) for cls in (cnn, rnn)]
        assert type(values[0]) is type(values[1]), attribute
        if attribute.endswith("_config"):
            assert all(dataclasses.is_dataclass(v) for v in values), attribute


@pytest.mark.parametrize("kind", KINDS)
def test_every_stage_config_takes_what_the_stage_sets(kind, image_dataset, text_dataset):
    task = tasks.get_task(kind)
    dataset = image_dataset if task.data_kind == "images" else text_dataset
    search_fields = {f.name for f in dataclasses.fields(task.search_config)}
    assert {"seed", "output_dir", "dataset", "resume", *task.search_data_settings(dataset)} <= search_fields
    for config in (task.select_config, task.evaluate_config, task.transfer_config):
        config()  # every setting has a default
    assert task.selection_metric.startswith("validation_")


@pytest.mark.parametrize("kind, wrong, right", [("cnn", "text", "images"), ("rnn", "images", "text")])
def test_a_task_refuses_a_dataset_of_the_other_kind(kind, wrong, right, image_dataset, text_dataset):
    task = tasks.get_task(kind)
    dataset = {"images": image_dataset, "text": text_dataset}[wrong]
    message = rf"Dataset '{dataset.path}' holds {wrong} data; the {kind} task reads {right}"
    with pytest.raises(tasks.DataKindError, match=message):
        task.check_data(dataset)
    with pytest.raises(tasks.DataKindError, match=message):
        task.load_data(dataset)


def test_each_task_reads_its_own_kind_of_data(image_dataset, text_dataset):
    images = tasks.get_task("cnn").load_data(image_dataset)
    assert isinstance(images, ImageData) and images.train_images.shape == (12, 8, 8, 1)
    corpus = tasks.get_task("rnn").load_data(text_dataset)
    assert isinstance(corpus, Corpus) and corpus.vocab_size == 6  # a..e and <eos>


def test_primitives_are_those_the_search_ran_with():
    cnn = tasks.get_task("cnn")
    assert cnn.primitives(cnn.search_config(primitives="none,skip_connect")) == ["none", "skip_connect"]
    rnn = tasks.get_task("rnn")
    assert "tanh" in rnn.primitives(rnn.search_config())


def test_config_from_dict_refuses_unknown_keys_and_restores_integers():
    @dataclasses.dataclass
    class Config:
        epochs: int = 1
        rate: float = 0.5

    assert tasks.config_from_dict(Config, {"epochs": 3.0}, "search", rate=1.0) == Config(3, 1.0)
    assert isinstance(tasks.config_from_dict(Config, {"epochs": 3.0}, "search").epochs, int)
    with pytest.raises(ValueError, match=r"\[stage 'select'\] unknown Config setting\(s\) epoch\. Known: epochs, rate"):
        tasks.config_from_dict(Config, {"epoch": 3}, "select")
