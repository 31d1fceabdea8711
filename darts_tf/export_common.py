"""What the CNN and RNN exports share: the directory layout model servers read, writing a Keras `ExportArchive`
so the SavedModel restores under the session-based loader, and metadata.json.

Layout (TF Serving's ``--model_base_path`` and KServe's ``storageUri`` read the base path)::

    export_dir/                 the base path (``version=N``)
        N/                      one version: saved_model.pb, variables/, assets/, metadata.json, genotype.json, ...
    export_dir/                 or, with ``version=None``, the SavedModel itself (saved_model.pb directly inside)

`resolve_saved_model_dir` accepts either and returns the directory holding saved_model.pb (for a base path: the
highest numeric version, as TF Serving's default version policy picks it).

Why `keras.export.ExportArchive`: a Keras 3 model held by a plain `tf.Module` and written with
`tf.saved_model.save` loads with `tf.saved_model.load`, but the TF1 session loader (TF Serving's C++
`LoadSavedModel`, KServe, `saved_model_cli run`) does not restore its variables ("FailedPreconditionError:
Could not find variable network_cifar/.../kernel"; tensorflow/serving#2250, keras-team/keras#20095). The archive
tracks the backing `tf.Variable`s of the Keras variables its endpoints use, so they are in the checkpoint and
in the graph's restore op.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional

from darts_tf import io_utils
from darts_tf.io_utils import atomic_write_text, publish_directory

SAVED_MODEL_FILE = "saved_model.pb"
METADATA_FILE = "metadata.json"
GENOTYPE_FILE = "genotype.json"
TFLITE_FILE = "model.tflite"
SERVE_TAG = "serve"


def check_version(version: Optional[int]) -> Optional[int]:
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer (TF Serving's numbered version directory). "
                         f"Received: version={version!r}")
    return version


def numeric_versions(base_dir: str) -> List[int]:
    """The numbered subdirectories of `base_dir` that hold a SavedModel, ascending."""
    if not io_utils.isdir(base_dir):
        return []
    return sorted(int(n) for n in io_utils.listdir(base_dir)
                  if n.isdigit() and io_utils.isfile(os.path.join(base_dir, n, SAVED_MODEL_FILE)))


def is_saved_model_dir(path: str) -> bool:
    return io_utils.isfile(os.path.join(path, SAVED_MODEL_FILE))


def resolve_saved_model_dir(path: str, written_by: str = "darts-export") -> str:
    """The directory holding saved_model.pb: `path` itself, or for a base path its highest numbered version."""
    if is_saved_model_dir(path):
        return path
    versions = numeric_versions(path)
    if versions:
        return os.path.join(path, str(versions[-1]))
    raise FileNotFoundError(f"{path!r} is not a SavedModel directory (no saved_model.pb) nor a base path of numbered "
                            f"versions ({os.path.join(path, '1', SAVED_MODEL_FILE)!r}); pass the directory written "
                            f"by {written_by}.")


def check_saved_model(directory: str) -> None:
    """What every export verifies before it is published: the SavedModel file is there."""
    if not is_saved_model_dir(directory):
        raise RuntimeError(f"The export in {directory!r} has no {SAVED_MODEL_FILE}; nothing was published.")


@contextlib.contextmanager
def publish_export(export_dir: str, version: Optional[int] = None) -> Iterator[str]:
    """Yields a temporary directory to write one SavedModel (and its side files) into; on success it becomes
    `export_dir/<version>/` (other versions are kept) or, with `version=None`, `export_dir` itself, by a rename.
    A flat export already at `export_dir` is replaced by the versioned layout as a whole."""
    version = check_version(version)
    if version is None:
        with publish_directory(export_dir, verify=check_saved_model) as tmp:
            yield tmp
        return
    if is_saved_model_dir(export_dir):  # a flat export from before: the base path replaces it, atomically
        with publish_directory(export_dir) as base:
            target = os.path.join(base, str(version))
            io_utils.makedirs(target)
            yield target
            check_saved_model(target)
        return
    with publish_directory(os.path.join(export_dir, str(version)), verify=check_saved_model) as tmp:
        yield tmp


def target_dir(export_dir: str, version: Optional[int] = None) -> str:
    """Where `publish_export(export_dir, version)` puts the SavedModel."""
    version = check_version(version)
    path = io_utils.absolute(export_dir)
    return path if version is None else os.path.join(path, str(version))


def write_archive(archive, directory: str) -> None:
    """Writes a `keras.export.ExportArchive` (quietly: no endpoint listing on stdout)."""
    archive.write_out(directory, verbose=False)


def write_metadata(directory: str, info: Dict[str, Any], run_metadata: Optional[Dict[str, Any]] = None) -> str:
    """metadata.json beside the SavedModel: `info` (what the export is) plus ``"run"`` (where it came from)."""
    path = os.path.join(directory, METADATA_FILE)
    atomic_write_text(path, json.dumps({**info, "run": dict(run_metadata or {})}, indent=1, default=str) + "\n")
    return path


def read_metadata(directory: str) -> Dict[str, Any]:
    """metadata.json of an export directory ({} when it has none)."""
    path = os.path.join(directory, METADATA_FILE)
    if not io_utils.isfile(path):
        return {}
    with io_utils.open_file(path) as f:
        return json.load(f)


def signature_spec(signature, key: str):
    """The TensorSpec of input `key` of a restored signature (a ConcreteFunction), or None."""
    return signature.structured_input_signature[1].get(key)

