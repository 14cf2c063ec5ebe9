# Sourced by scripts/demo and scripts/test: create .venv (once) and install the project into it.
# Usage: ensure_venv EXTRAS   (e.g. ensure_venv "" or ensure_venv "[dev]")
#
# Interpreter: $PYTHON if set, else the newest of python3.13, python3.12, python3 that is >= 3.11.
# 3.13 is preferred because CPython 3.11.7 has an intermittent "AST constructor recursion depth
# mismatch" SystemError in ast.parse (fixed in 3.11.8/3.12.2), which pytest's assertion rewriting
# trips over.

pick_python() {
  local py candidates=(${PYTHON:-} python3.13)
  # pyenv installs versions that its shims only run when selected: look at them directly.
  if command -v pyenv >/dev/null 2>&1; then
    candidates+=("$(pyenv root)"/versions/3.13*/bin/python3)
  fi
  candidates+=(python3.12 python3)
  for py in "${candidates[@]}"; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$py"
      return 0
    fi
  done
  echo "no Python >= 3.11 found (set PYTHON=...)" >&2
  return 1
}

ensure_venv() {
  local extras=${1:-}
  if [ ! -x .venv/bin/python ]; then
    local py
    py=$(pick_python)
    "$py" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
}
