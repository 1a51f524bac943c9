"""API key settings and the key ring (no server needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.auth import Forbidden, KeyRing, Unauthenticated
from journeys import envvars
from journeys.settings import ApiSettings

KEYS = {"pm": "rk_0123456789abcdef", "prom": {"key": "mk_0123456789abcdef",
                                               "scopes": ["metrics"]}}


def test_keys_from_env_bare_or_with_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(envvars.API_KEYS, '{"pm": "rk_0123456789abcdef", '
                       '"prom": {"key": "mk_0123456789abcdef", "scopes": ["metrics", "read"]}}')
    s = ApiSettings.build()
    assert s.api_keys["pm"].scopes == ("read",)
    assert s.api_keys["prom"].scopes == ("metrics", "read")
    assert "rk_0123456789abcdef" not in repr(s) and "rk_0123456789abcdef" not in str(s)


def test_no_keys_means_auth_off() -> None:
    ring = KeyRing(ApiSettings().api_keys)
    assert not ring.enabled and ring.authorize(None, "read") is None


@pytest.mark.parametrize("keys", [{"pm": "short"}, {"pm": {"key": "rk_0123456789abcdef",
                                                           "scopes": ["root"]}}])
def test_bad_keys_are_refused(keys: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ApiSettings(api_keys=keys)  # type: ignore[arg-type]


def test_key_ring() -> None:
    ring = KeyRing(ApiSettings(api_keys=KEYS).api_keys)  # type: ignore[arg-type]
    assert ring.enabled
    assert ring.authorize("rk_0123456789abcdef", "read") == "pm"
    assert ring.authorize("mk_0123456789abcdef", "metrics") == "prom"
    with pytest.raises(Unauthenticated, match="required"):
        ring.authorize("", "read")
    with pytest.raises(Unauthenticated, match="unknown API key") as err:
        ring.authorize("rk_0123456789abcdeX", "read")
    assert "rk_" not in str(err.value)
    with pytest.raises(Forbidden, match="'prom' lacks the 'read' scope") as forbidden:
        ring.authorize("mk_0123456789abcdef", "read")
    assert "mk_" not in str(forbidden.value)
