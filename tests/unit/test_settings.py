"""Settings: env names documented in journeys.envvars really map to fields."""

from __future__ import annotations

import pytest

from journeys import envvars
from journeys.settings import ApiSettings, CollectorSettings, EmbeddedSettings, WorkerSettings


def test_every_documented_env_var_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = {
        envvars.KAFKA_BOOTSTRAP_SERVERS: ("127.0.0.1:1234", lambda s: s.kafka.bootstrap_servers),
        envvars.KAFKA_TOPIC_PREFIX: ("t9", lambda s: s.kafka.topic_prefix),
        envvars.KAFKA_PARTITIONS: ("7", lambda s: s.kafka.partitions),
        envvars.WAREHOUSE_BACKEND: ("server", lambda s: s.warehouse.backend),
        envvars.WAREHOUSE_PORT: ("9123", lambda s: s.warehouse.port),
        envvars.WAREHOUSE_DATABASE: ("db9", lambda s: s.warehouse.database),
        envvars.WORKER_APP_ID: ("w9", lambda s: s.app_id),
        envvars.WORKER_FLUSH_MAX_EVENTS: ("77", lambda s: s.flush_max_events),
        envvars.WORKER_ALLOWED_LATENESS: ("2m", lambda s: s.allowed_lateness_ms),
        envvars.DATA_DIR: ("/tmp/x9", lambda s: str(s.data_dir)),
        envvars.WORKER_PATH_CAP: ("25", lambda s: s.path_cap),
    }
    for name, (value, _) in samples.items():
        monkeypatch.setenv(name, value)
    s = WorkerSettings.build()
    got = {name: get(s) for name, (_, get) in samples.items()}
    assert got[envvars.KAFKA_BOOTSTRAP_SERVERS] == "127.0.0.1:1234"
    assert got[envvars.KAFKA_PARTITIONS] == 7
    assert got[envvars.WAREHOUSE_BACKEND] == "server"
    assert got[envvars.WAREHOUSE_PORT] == 9123
    assert got[envvars.WORKER_FLUSH_MAX_EVENTS] == 77
    assert got[envvars.WORKER_ALLOWED_LATENESS] == 120_000
    assert got[envvars.DATA_DIR] == "/tmp/x9"
    assert got[envvars.WORKER_PATH_CAP] == 25
    assert s.kafka.raw_topic == "t9.touchpoints"


def test_embedded_broker_port_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EmbeddedSettings.build().broker_port == 0  # a free port, in the stack file
    monkeypatch.setenv(envvars.EMBEDDED_BROKER_PORT, "19092")
    assert EmbeddedSettings.build().broker_port == 19092


def test_settings_are_frozen_and_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.HTTP_PORT, "9999")
    s = ApiSettings.build(port=8123)
    assert s.port == 8123
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        s.port = 1  # type: ignore[misc]
    assert CollectorSettings.build().max_batch == 1000
    assert EmbeddedSettings.build().warehouse.backend == "chdb"


def test_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "journeys.env"
    f.write_text("JOURNEYS_KAFKA__TOPIC_PREFIX=fromfile\n")
    monkeypatch.setenv(envvars.SETTINGS_FILE, str(f))
    assert WorkerSettings.build().kafka.topic_prefix == "fromfile"


def test_embedded_api_reads_its_keys_from_the_settings_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from deploy.embedded import embedded_api_settings

    f = tmp_path / "journeys.env"
    f.write_text('JOURNEYS_API_KEYS={"pm": "rk_0123456789abcdef"}\n')
    monkeypatch.setenv(envvars.SETTINGS_FILE, str(f))
    embedded = EmbeddedSettings.build(port=8765)
    api = embedded_api_settings(embedded, embedded.warehouse)
    assert api.port == 8765 and api.warehouse == embedded.warehouse
    assert api.api_keys["pm"].key.get_secret_value() == "rk_0123456789abcdef"


def test_producer_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.KAFKA_PRODUCER, '{"compression_type": null, "linger_ms": 20}')
    assert CollectorSettings.build().kafka.producer == {"compression_type": None,
                                                        "linger_ms": 20}


def test_worker_producer_is_idempotent_unless_the_broker_is_tansu() -> None:
    """Apache Kafka: idempotent (a retry after a lost ack never duplicates); the
    embedded Tansu broker refuses it, so the embedded stack turns it off."""
    from stream.agents.app import create_app

    kafka_app = create_app(WorkerSettings.build())
    assert kafka_app.producer._settings_extra()["enable_idempotence"] is True
    tansu = WorkerSettings.build().kafka.model_copy(update={"idempotent_producer": False})
    tansu_app = create_app(WorkerSettings.build(kafka=tansu, app_id="t2"))
    assert "enable_idempotence" not in tansu_app.producer._settings_extra()
