# Shared by scripts/*.sh: create .venv and install the project (with test extras) once,
# again only when pyproject.toml changed.
ensure_venv() {
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  local stamp=.venv/.journeys-installed
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing the project and its dependencies into .venv (first run takes ~1 min)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
    touch "$stamp"
  fi
}
