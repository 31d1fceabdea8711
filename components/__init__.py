"""The pipeline stages' executors. A stage process launched by ``pipelines.run`` records why it failed
(``components.failures``)."""

from . import failures as _failures

_failures.install_from_environment()
