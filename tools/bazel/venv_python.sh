#!/bin/sh
# The Python interpreter of Bazel's py_binary/py_test targets: the repository's virtualenv, where
# TensorFlow, Keras and the other third-party packages are installed (Bazel does not fetch them).
# $DARTS_TF_PYTHON (passed with --test_env / --action_env) overrides it.
if [ -n "${DARTS_TF_PYTHON:-}" ]; then
  exec "$DARTS_TF_PYTHON" "$@"
fi
# This file reaches Bazel's runfiles as a symlink into the source tree: resolve it to find .venv.
here=$(dirname "$(readlink -f "$0")")
venv_python="$here/../../.venv/bin/python"
if [ ! -x "$venv_python" ]; then
  echo "tools/bazel/venv_python.sh: no virtualenv interpreter at $venv_python; create .venv" \
       "(python -m venv .venv && .venv/bin/pip install -e .[cpu,test]) or set DARTS_TF_PYTHON." >&2
  exit 127
fi
exec "$venv_python" "$@"
