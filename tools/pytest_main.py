"""`main` of every Bazel py_test: runs the test file(s) given as arguments with pytest.

Bazel runs it in the runfiles tree of the workspace, so the repository's pyproject.toml (markers,
the default `-m 'not slow'`) applies. Pass `--test_env=DARTS_TF_RUNSLOW=1` to also run the
`@pytest.mark.slow` tests, and `--test_arg=-k --test_arg=NAME` (etc.) for other pytest options.
"""

import os
import sys

import pytest


def pytest_args(argv, environ):
    args = ["-p", "no:cacheprovider", "--rootdir", os.getcwd()]
    if os.path.exists("pyproject.toml"):
        args += ["-c", "pyproject.toml"]
    if environ.get("TEST_TMPDIR"):
        args += ["--basetemp", os.path.join(environ["TEST_TMPDIR"], "pytest")]
    if environ.get("XML_OUTPUT_FILE"):
        args += ["--junitxml", environ["XML_OUTPUT_FILE"]]
    if environ.get("DARTS_TF_RUNSLOW", "") not in ("", "0"):
        args += ["-m", ""]  # an empty marker expression selects every test
    return args + list(argv)


def main():
    sys.exit(pytest.main(pytest_args(sys.argv[1:], os.environ)))


if __name__ == "__main__":
    main()
