"""Package layout of the darts_tf distribution (the metadata is in pyproject.toml).

The source tree keeps three top-level folders: ``darts_tf/`` (the library), ``components/`` (the pipeline stages'
executors) and ``pipelines/`` (the Kubeflow pipeline). Installed, the last two are not top-level packages with
those generic names but live under the project's namespace:

    components/  ->  darts_tf_pipelines.components
    pipelines/   ->  darts_tf_pipelines.pipelines      (python -m darts_tf_pipelines.pipelines.compile ...)

Inside each package imports are relative; the few imports from pipelines into components pick the name the package
was loaded under. From a checkout, ``python -m pipelines.run`` and ``python -m pipelines.compile`` work as before; the
KFP components import ``darts_tf_pipelines.components``, so the stages need the package installed (``pip install
-e .``, as scripts/ensure_env.sh does, or the image).
"""

from setuptools import find_namespace_packages, setup

NAMESPACE = "darts_tf_pipelines"
MAPPED = ("components", "pipelines")  # source folder -> NAMESPACE.<folder>
_SKIP = ["*.__pycache__", "*.__pycache__.*"]


def _mapped_packages():
    found = find_namespace_packages(include=[*MAPPED, *(f"{m}.*" for m in MAPPED)], exclude=_SKIP)
    return [f"{NAMESPACE}.{name}" for name in found]


setup(
    packages=find_namespace_packages(include=["darts_tf", "darts_tf.*"], exclude=_SKIP) + _mapped_packages(),
    package_dir={f"{NAMESPACE}.{m}": m for m in MAPPED},
)
