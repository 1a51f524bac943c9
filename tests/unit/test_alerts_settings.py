"""Alert delivery settings: documented env names map to fields; both URL list formats."""

from __future__ import annotations

import pytest

from journeys import envvars
from journeys.settings import EmbeddedSettings, WorkerSettings


def test_alerting_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.ALERTING_WEBHOOK_URLS, "http://127.0.0.1:1/a, http://127.0.0.1:2/b")
    monkeypatch.setenv(envvars.ALERTING_SLACK_WEBHOOK_URLS, '["https://hooks.example/x"]')
    monkeypatch.setenv(envvars.ALERTING_SIGNING_SECRET, "shh")
    monkeypatch.setenv(envvars.ALERTING_MAX_ATTEMPTS, "3")
    monkeypatch.setenv(envvars.ALERTING_BACKOFF_INITIAL, "0.25")
    monkeypatch.setenv(envvars.ALERTING_BACKOFF_MAX, "9")
    monkeypatch.setenv(envvars.ALERTING_TIMEOUT, "4")
    monkeypatch.setenv(envvars.ALERTING_QUEUE_SIZE, "77")
    a = WorkerSettings.build().alerting
    assert a.webhook_urls == ("http://127.0.0.1:1/a", "http://127.0.0.1:2/b")
    assert a.slack_webhook_urls == ("https://hooks.example/x",)
    assert a.signing_secret.get_secret_value() == "shh" and "shh" not in repr(a)
    assert (a.max_attempts, a.backoff_initial_s, a.backoff_max_s, a.timeout_s, a.queue_size) == (
        3, 0.25, 9.0, 4.0, 77)
    assert EmbeddedSettings.build().alerting.webhook_urls == a.webhook_urls


def test_alerting_defaults_send_nowhere() -> None:
    a = WorkerSettings().alerting
    assert a.webhook_urls == () and a.slack_webhook_urls == ()
    assert not a.signing_secret.get_secret_value()
