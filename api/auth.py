"""API keys with scopes for the query API.

Keys come from ApiSettings.api_keys (name -> key + scopes). No keys configured means
auth is off: the embedded `journeys demo` on 127.0.0.1 needs none; a warning at start
says so. A key travels in `Authorization: Bearer <key>` or `X-API-Key` — never in the
query string, which access logs record. Keys are compared in constant time against
every configured key and never logged or echoed: errors name the problem, not the key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from journeys.errors import JourneysError
from journeys.settings import ApiKey

log = logging.getLogger(__name__)


class Unauthenticated(JourneysError):
    """No API key, or one that is not configured (HTTP 401)."""


class Forbidden(JourneysError):
    """A valid API key without the scope the endpoint needs (HTTP 403)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured keys as SHA-256 digests: fixed-length constant-time comparison,
    and no key text kept in memory that a repr or a crash dump could show."""

    def __init__(self, keys: Mapping[str, ApiKey]) -> None:
        self._keys = [(_digest(k.key.get_secret_value()), name, frozenset(k.scopes))
                      for name, k in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authorize(self, given: str | None, scope: str) -> str | None:
        """The key's name when it may use `scope`; None when auth is off."""
        if not self._keys:
            return None
        if not given:
            raise Unauthenticated(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        raw = _digest(given)
        found: tuple[str, frozenset[str]] | None = None
        for key, name, scopes in self._keys:  # compare with all: no timing hint
            if hmac.compare_digest(key, raw):
                found = (name, scopes)
        if found is None:
            raise Unauthenticated("unknown API key")
        if scope not in found[1]:
            raise Forbidden(f"API key {found[0]!r} lacks the {scope!r} scope")
        return found[0]


_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                       description="the API key in an X-API-Key header")


def require(scope: str) -> Callable[..., Awaitable[str | None]]:
    """Dependency: the caller's key must carry `scope` (no-op when auth is off)."""

    async def check(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> str | None:
        ring: KeyRing = request.app.state.keyring
        given = [k for k in (bearer.credentials if bearer is not None else None, header) if k]
        # every key presented must pass: a good one next to a bad one is refused
        names = {ring.authorize(key, scope) for key in given} or {ring.authorize(None, scope)}
        name = names.pop() if len(names) == 1 else None
        if names:  # two different valid keys: which one is calling?
            raise Unauthenticated("two different API keys: send one")
        if name is not None:
            request.state.api_key_name = name  # for handlers/metrics; never the key itself
        return name

    return check
