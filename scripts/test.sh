#!/usr/bin/env bash
# The one test command: lint + every test (unit and integration), from a fresh machine.
#
#   bash scripts/test.sh [pytest args...]
#
# On Debian/Ubuntu it installs what the integration tests need (clickhouse-server,
# clickhouse-client, kcat, a JRE + Maven for Apache Kafka, and chromium + chromium-driver
# for the dashboard's browser tests) with apt when missing,
# creates .venv, installs the project with its test extras and fetches the Apache Kafka
# jars from Maven Central (cached in ~/.cache/journeys or $JOURNEYS_KAFKA_JARS_DIR).
# Exits non-zero on any failure, including "no tests collected" (pytest exit code 5),
# so CI can never pass without running tests.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Root runs apt directly; otherwise sudo, non-interactive when there is no terminal (CI).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -t 0 ]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root or sudo to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 \
        || die "apt-get not found; install these yourself: $*"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq "$@" >/dev/null
}

# 1. System packages (the ClickHouse server and Kafka's JVM the integration tests start themselves).
if [ ! -x /usr/sbin/clickhouse-server ]; then
    say "installing clickhouse-server, clickhouse-client, kcat (apt)"
    apt_install clickhouse-server clickhouse-client kcat
else
    say "clickhouse-server present"
fi
# Apache Kafka (deploy.local.kafka) runs from Maven Central jars: it needs java >= 17 and mvn.
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    say "installing maven, default-jre-headless (apt)"
    apt_install maven default-jre-headless
else
    say "java and mvn present"
fi

# The dashboard's browser tests (tests/integration/test_dashboard_browser.py) drive Debian's
# headless Chromium through chromedriver (selenium); they fail, never skip, without it.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    say "installing chromium, chromium-driver (apt)"
    apt_install chromium chromium-driver
else
    say "chromium and chromedriver present"
fi

# 2. Python environment.
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (Python >= 3.11 is required)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python >= 3.11 is required; found $("$PYTHON" --version 2>&1)"

if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$PYTHON" --version 2>&1)"
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        # Debian's python3 cannot create venvs until python3-venv is installed.
        rm -rf .venv
        say "installing python3-venv (apt)"
        apt_install python3-venv
        "$PYTHON" -m venv .venv
    fi
fi
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
ensure_venv   # creates .venv; (re)installs ".[test]" only when pyproject.toml changed
say ".venv ready ($(.venv/bin/python --version 2>&1))"

# The Apache Kafka broker's jars (a no-op when the cache is complete).
say "Apache Kafka jars"
.venv/bin/python -m deploy.local.kafka fetch

# 3. Lint and types.
say "ruff check ."
.venv/bin/ruff check .
say "mypy (journeys/, stream/, warehouse/, ingest/, api/, deploy/: [tool.mypy] in pyproject.toml)"
.venv/bin/mypy

# 4. Tests: everything (the broker tests on Apache Kafka), then the tests that use the
# `broker` fixture again on Tansu, the embedded broker of `journeys demo`/`up`
# (JOURNEYS_TEST_BROKER=tansu), except those marked `kafka_only` (most cells of the
# partitions x workers matrix: a subset covering each axis runs on Tansu; the kill,
# quarantine, alert-worker and replay tests, whose logic is the worker's, not the
# broker's). The Tansu pass runs when no pytest arguments are given
# (CI), or with JOURNEYS_TEST_TANSU=1 (over the same arguments); JOURNEYS_TEST_TANSU=0
# skips it.
run_pytest() {
    set +e
    # --durations: the slowest tests in every log, to keep the command within budget
    .venv/bin/python -m pytest --durations=30 "$@"
    local rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        die "pytest collected no tests (exit code 5): treated as a failure"
    elif [ "$rc" -ne 0 ]; then
        die "pytest failed (exit code $rc)"
    fi
}
say "pytest $* (broker tests on Apache Kafka)"
run_pytest "$@"
tansu="${JOURNEYS_TEST_TANSU:-}"
if [ -z "$tansu" ]; then tansu=$([ "$#" -eq 0 ] && echo 1 || echo 0); fi
if [ "$tansu" = "1" ]; then
    [ "$#" -eq 0 ] && set -- tests/integration tests/faults
    say "pytest -m 'broker and not kafka_only' $* (the same broker tests on Tansu)"
    JOURNEYS_TEST_BROKER=tansu run_pytest -m "broker and not kafka_only" "$@"
fi
say "all checks passed"
