#!/usr/bin/env bash
# Creates the project's environment if it is missing: .venv with the pinned requirements and the package
# (editable), plus Graphviz's `dot` and tcmalloc (Debian/Ubuntu, when run as root). Idempotent and quick when
# everything is there. Source it or run it; DARTS_TF_VENV overrides the location.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DARTS_TF_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.darts_tf_requirements"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"

# Debian packages: Graphviz's `dot` (cell pictures) and tcmalloc (benchmarks/run.py --malloc=tcmalloc, and the
# lower-memory CPU runs the README describes)
APT_NEEDED=()
command -v dot >/dev/null 2>&1 || APT_NEEDED+=(graphviz)
SHARED_LIBS="$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)"
[[ "$SHARED_LIBS" == *"libtcmalloc_minimal.so.4 "* ]] || APT_NEEDED+=(libtcmalloc-minimal4)
if [ ${#APT_NEEDED[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing ${APT_NEEDED[*]} (apt-get install)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT_NEEDED[@]}" >/dev/null) || \
      echo "[setup] warning: could not install ${APT_NEEDED[*]}; without graphviz cell pictures fail, without" \
           "libtcmalloc-minimal4 benchmarks/run.py --malloc=tcmalloc refuses to run" >&2
  else
    echo "[setup] warning: missing ${APT_NEEDED[*]}; install them (apt-get install ${APT_NEEDED[*]};" \
         "macOS: brew install graphviz)" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing pinned requirements into $VENV (first run takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install -q --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi
