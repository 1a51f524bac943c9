"""Webhook payloads (generic JSON and Slack-compatible) and request signing.

Signing: `X-Journeys-Signature: sha256=<hex>` is HMAC-SHA256 with the shared secret over
`<timestamp>.<raw body>`, where `<timestamp>` (unix seconds) is also sent as
`X-Journeys-Timestamp`. Receivers recompute it over the raw bytes and reject old
timestamps, so a captured request cannot be replayed later (`verify` does both).
Deliveries are at least once: receivers deduplicate on `X-Journeys-Alert-Id`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Literal

import orjson

from journeys import __version__
from journeys.timeutil import format_duration_ms, ms_to_iso
from stream.engine.alert_verdict import ALL_CHANNELS, AlertRecord

PayloadKind = Literal["generic", "slack"]
SIGNATURE_HEADER = "X-Journeys-Signature"
TIMESTAMP_HEADER = "X-Journeys-Timestamp"
ALERT_ID_HEADER = "X-Journeys-Alert-Id"
KIND_HEADER = "X-Journeys-Alert-Kind"
DEFAULT_TOLERANCE_S = 300
PAYLOAD_VERSION = 1


def summary(r: AlertRecord) -> str:
    """One line a human reads first (Slack text, email subject, pager title)."""
    where = "all channels" if r.channel == ALL_CHANNELS else f"channel {r.channel}"
    window = f"{ms_to_iso(r.window_start_ms)} – {ms_to_iso(r.window_end_ms)}"
    if r.kind == "fired":
        return (
            f"Drop-off alert: {r.journey} / {r.step} ({where}): {r.rate:.1%} dropped "
            f"({r.dropped}/{r.population}) vs baseline {r.baseline:.1%}, window {window}"
        )
    return (
        f"Recovered: {r.journey} / {r.step} ({where}): {r.rate:.1%} dropped "
        f"({r.dropped}/{r.population}), back under baseline {r.baseline:.1%} + "
        f"{r.threshold:.0%}, window {window}"
    )


def generic_payload(r: AlertRecord) -> dict[str, Any]:
    """The record with readable times, a summary and a schema version."""
    return {
        "version": PAYLOAD_VERSION,
        "type": f"journeys.dropoff.{r.kind}",
        "summary": summary(r),
        "window_start": ms_to_iso(r.window_start_ms),
        "window_end": ms_to_iso(r.window_end_ms),
        "horizon": format_duration_ms(r.horizon_ms),
        "alert": r.to_dict(),
    }


def slack_payload(r: AlertRecord) -> dict[str, Any]:
    """Slack incoming-webhook message: `text` is the fallback, `blocks` the layout."""
    icon = ":rotating_light:" if r.kind == "fired" else ":white_check_mark:"
    fields = [
        ("Journey / step", f"{r.journey} / {r.step}"),
        ("Channel", r.channel),
        ("Dropped", f"{r.dropped}/{r.population} ({r.rate:.1%})"),
        ("Baseline", f"{r.baseline:.1%} (+{r.threshold:.0%} threshold)"),
        ("Window", f"{ms_to_iso(r.window_start_ms)} ({format_duration_ms(r.horizon_ms)} horizon)"),
        ("p-value", f"{r.p_value:.2e}"),
    ]
    return {
        "text": f"{icon} {summary(r)}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{summary(r)}*"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in fields
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"alert `{r.alert_id}` · journeys {__version__}"}
            ]},
        ],
    }


def render(r: AlertRecord, kind: PayloadKind) -> bytes:
    """The exact body bytes sent (and signed)."""
    payload = slack_payload(r) if kind == "slack" else generic_payload(r)
    return orjson.dumps(payload)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(alert_id: str, alert_kind: str, body: bytes, secret: bytes | None,
            now: float | None = None) -> dict[str, str]:
    """Request headers, signed afresh per attempt (a retry after a long backoff must not
    look stale to the receiver); the signature pair only when a secret is configured."""
    out = {
        "Content-Type": "application/json",
        "User-Agent": f"journeys/{__version__}",
        ALERT_ID_HEADER: alert_id,
        KIND_HEADER: alert_kind,
    }
    if secret:
        ts = int(time.time() if now is None else now)
        out[TIMESTAMP_HEADER] = str(ts)
        out[SIGNATURE_HEADER] = sign(secret, ts, body)
    return out


def verify(
    secret: bytes,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: constant-time compare, and reject stale or future timestamps."""
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
