"""deploy/compose and deploy/k8s, checked offline: Kubernetes schemas
(kubernetes-validate), setting names, commands, probes, the autoscaler's bound, and
that every role's settings build from what the manifests give it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.cli import _register
from deploy.cli import app as cli
from journeys import envvars
from journeys.settings import ApiSettings, CollectorSettings, WarehouseRole, WorkerSettings
from journeys.topics import PRODUCER_MAX_REQUEST_BYTES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
K8S_VERSION = "1.31.0"
KNOWN = {v for k, v in vars(envvars).items() if k.isupper() and isinstance(v, str)
         and v.startswith(envvars.PREFIX) and v != envvars.PREFIX}
ROLE_SETTINGS: dict[str, type[Any]] = {"worker": WorkerSettings, "api": ApiSettings,
                                       "collector": CollectorSettings,
                                       "migrate": WarehouseRole, "topics": WorkerSettings,
                                       "retention": WarehouseRole, "compact": WarehouseRole}


def _commands() -> set[str]:
    _register()
    return {c.name or c.callback.__name__ for c in cli.registered_commands if c.callback}


def _k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in _k8s_docs() if d["kind"] == kind]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    containers: list[dict[str, Any]] = spec["template"]["spec"]["containers"]
    return containers


def _k8s_env(container: dict[str, Any]) -> dict[str, str]:
    config = _by_kind("ConfigMap")[0]["data"]
    secret = _by_kind("Secret")[0]["stringData"]
    env = dict(config)
    if any("secretRef" in ref for ref in container.get("envFrom", ())):
        env.update(secret)
    env.update({e["name"]: e["value"] for e in container.get("env", ())})
    return env


def _build(role: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ROLE_SETTINGS[role].build()


@pytest.mark.parametrize("doc", _k8s_docs(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_kubernetes_resource_is_valid(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_kubernetes_roles_run_real_commands_with_settings_that_build(
        monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _commands()
    roles = set()
    for doc in [*_by_kind("Deployment"), *_by_kind("Job"), *_by_kind("CronJob")]:
        for c in _containers(doc):
            role = c["args"][0]
            assert role in commands, role
            env = _k8s_env(c)
            assert set(env) <= KNOWN, set(env) - KNOWN
            _build(role, env, monkeypatch)
            roles.add(role)
    assert roles == {"worker", "api", "collector", "migrate", "topics", "retention",
                     "compact"}


def test_scheduled_maintenance_parses_its_options_and_never_overlaps() -> None:
    """The CronJobs' arguments are options the commands take (typer parses them here
    without running anything), and a slow run is never doubled by the next."""
    from typer.testing import CliRunner

    _register()
    for doc in _by_kind("CronJob"):
        assert doc["spec"]["concurrencyPolicy"] == "Forbid"
        for c in _containers(doc):
            result = CliRunner().invoke(cli, [*c["args"], "--help"])
            assert result.exit_code == 0, result.output
            for option in (a for a in c["args"][1:] if a.startswith("--")):
                assert option in result.output, option


def test_probes_hit_healthz_and_readyz_on_the_port_the_process_listens_on() -> None:
    for doc in _by_kind("Deployment"):
        for c in _containers(doc):
            env = _k8s_env(c)
            [port] = c["ports"]
            listens = env.get("JOURNEYS_WEB_PORT") or env.get("JOURNEYS_PORT")
            assert str(port["containerPort"]) == listens, doc["metadata"]["name"]
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    for svc in _by_kind("Service"):
        assert svc["spec"]["selector"] in [d["spec"]["selector"]["matchLabels"]
                                           for d in _by_kind("Deployment")]


def test_worker_autoscaler_is_bounded_by_the_partitions() -> None:
    [hpa] = _by_kind("HorizontalPodAutoscaler")
    partitions = int(_by_kind("ConfigMap")[0]["data"]["JOURNEYS_KAFKA__PARTITIONS"])
    assert hpa["spec"]["scaleTargetRef"]["name"] == "journeys-worker"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] == partitions


def _compose() -> dict[str, Any]:
    text = re.sub(r"\$\{CLICKHOUSE_PASSWORD:\?[^}]*\}", "secret", COMPOSE.read_text())
    assert "${" not in text  # every variable the file uses is handled here
    compose: dict[str, Any] = yaml.safe_load(text)
    return compose


def test_compose_services_images_health_checks_and_volumes() -> None:
    services = _compose()["services"]
    assert set(services) == {"kafka", "clickhouse", "migrate", "topics", "worker", "api",
                             "collector"}
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert int(services["kafka"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"]) > \
        PRODUCER_MAX_REQUEST_BYTES
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    for name in ("kafka", "clickhouse", "worker", "api", "collector"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("migrate", "topics"):
        assert services[name]["restart"] == "no"
    assert services["worker"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "topics": {"condition": "service_completed_successfully"}}
    assert services["api"]["ports"] == ["8000:8000"]
    assert services["collector"]["ports"] == ["8001:8001"]
    declared = set(_compose()["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", ())}
    assert used <= declared


def test_compose_roles_run_real_commands_with_settings_that_build(
        monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _commands()
    for name, service in _compose()["services"].items():
        if service.get("image", "").startswith("journeys"):
            role = service["command"][0]
            assert role in commands, name
            env = {k: str(v) for k, v in service["environment"].items()}
            assert set(env) <= KNOWN, set(env) - KNOWN
            _build(role, env, monkeypatch)
            if "healthcheck" in service:
                port = env.get("JOURNEYS_WEB_PORT") or env.get("JOURNEYS_PORT")
                assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
