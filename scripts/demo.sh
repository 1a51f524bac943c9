#!/usr/bin/env bash
# The README's first command: install into .venv (once) and run `journeys demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
exec .venv/bin/journeys demo "$@"
