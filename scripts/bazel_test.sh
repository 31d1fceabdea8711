#!/usr/bin/env bash
# Runs the Bazel tests offline with Debian's bazel-bootstrap (bazel 4.2.3), which cannot download
# @rules_cc, @rules_java or @remote_coverage_tools: they are replaced by the stubs in
# tools/bazel/stubs, given by absolute path. Python targets run with the repository's .venv
# (tools/bazel/venv_python.sh). BUILD files come from tools/gen_build.py.
#
#   scripts/bazel_test.sh                          # bazel test //...
#   scripts/bazel_test.sh //tests:test_visualize   # some targets
#   scripts/bazel_test.sh //tests/... --test_output=all
#
# Environment: BAZEL (the bazel binary), BAZEL_OUTPUT_USER_ROOT (default ~/.cache/bazel, outside
# the repository), DARTS_TF_PYTHON (interpreter instead of .venv/bin/python),
# DARTS_TF_RUNSLOW=1 (also run @pytest.mark.slow tests).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
bazel="${BAZEL:-bazel}"
if ! command -v "$bazel" >/dev/null 2>&1; then
  echo "bazel_test.sh: '$bazel' is not installed. On Debian/Ubuntu: sudo apt-get install bazel-bootstrap" \
       "(or install Bazel 4.x from https://bazel.build and put it on PATH, or set BAZEL=/path/to/bazel)." >&2
  exit 127
fi
python="${DARTS_TF_PYTHON:-$repo/.venv/bin/python}"
if [ ! -x "$python" ]; then
  echo "bazel_test.sh: no Python interpreter at $python; create the virtualenv" \
       "(python3 -m venv .venv && .venv/bin/pip install -e '.[cpu,test]') or set DARTS_TF_PYTHON." >&2
  exit 2
fi

stubs="$repo/tools/bazel/stubs"
startup=()
if [ -n "${BAZEL_OUTPUT_USER_ROOT:-}" ]; then
  startup+=("--output_user_root=$BAZEL_OUTPUT_USER_ROOT")
fi
flags=(
  "--override_repository=rules_cc=$stubs/rules_cc"
  "--override_repository=rules_java=$stubs/rules_java"
  "--override_repository=remote_coverage_tools=$stubs/remote_coverage_tools"
  "--test_env=DARTS_TF_PYTHON=$python"
  "--test_env=HOME"
)
if [ -n "${DARTS_TF_RUNSLOW:-}" ]; then
  flags+=("--test_env=DARTS_TF_RUNSLOW=$DARTS_TF_RUNSLOW")
fi

targets=()
options=()
for arg in "$@"; do
  case "$arg" in
    -*) options+=("$arg") ;;
    *) targets+=("$arg") ;;
  esac
done
if [ "${#targets[@]}" -eq 0 ]; then
  targets=("//...")
fi

cd "$repo"
if ! "$python" tools/gen_build.py --check >/dev/null; then
  echo "bazel_test.sh: warning: BUILD files are out of date; run: $python tools/gen_build.py" >&2
fi
exec "$bazel" ${startup[@]+"${startup[@]}"} test "${flags[@]}" ${options[@]+"${options[@]}"} -- "${targets[@]}"
