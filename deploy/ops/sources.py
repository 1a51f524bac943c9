"""Where `journeys status` and `ingest --wait` read the warehouse's figures from.

A ClickHouse server (or a chdb directory no process holds) is queried directly. The
embedded warehouse of a running `journeys up` is locked by that process (chdb: one
process per data directory), so then its API answers instead (`GET /v1/status`,
api/routes/status.py), and its `/metrics` gives the embedded worker's event time when
the broker keeps no commit metadata (Tansu).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from journeys.errors import ServiceUnavailable
from journeys.settings import ApiSettings, WarehouseConfig
from warehouse.queries.status import (
    OffsetRange,
    StageCount,
    TableStatus,
    WarehouseStatus,
    run_counts,
    warehouse_status,
)


class WarehouseSource(Protocol):
    where: str

    def status(self) -> WarehouseStatus: ...

    def run_counts(self, topic: str, ranges: Sequence[OffsetRange],
                   since: datetime) -> dict[str, int]: ...


class DirectWarehouse:
    """Queries ClickHouse (server or chdb) itself; a connection per call."""

    def __init__(self, config: WarehouseConfig) -> None:
        self.config = config
        self.where = (f"ClickHouse {config.host}:{config.port}/{config.database}"
                      if config.backend == "server" else f"chdb {config.path}")

    def _call(self, fn: Any, *args: Any) -> Any:
        from warehouse.connect import connect

        wh = connect(self.config, create_database=False)
        try:
            return fn(wh, *args)
        finally:
            wh.close()

    def status(self) -> WarehouseStatus:
        result: WarehouseStatus = self._call(warehouse_status)
        return result

    def run_counts(self, topic: str, ranges: Sequence[OffsetRange],
                   since: datetime) -> dict[str, int]:
        result: dict[str, int] = self._call(run_counts, topic, ranges, since)
        return result


def _key_for(scope: str) -> str | None:
    """A key with `scope` from JOURNEYS_API_KEYS (the embedded API reads the same
    environment), for an API that requires keys."""
    for key in ApiSettings.build().api_keys.values():
        if scope in key.scopes:
            return key.key.get_secret_value()
    return None


class StackApi:
    """A running stack's API (its warehouse is locked by its process)."""

    def __init__(self, api_url: str, timeout_s: float = 10.0) -> None:
        self.url = api_url.rstrip("/")
        self.where = f"the stack's API {self.url}"
        self.timeout_s = timeout_s

    def _get(self, path: str, scope: str, params: Any = None) -> httpx.Response:
        key = _key_for(scope)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            r = httpx.get(self.url + path, params=params, headers=headers,
                          timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"{self.where} did not answer: {exc}") from exc
        if r.status_code != 200:
            raise ServiceUnavailable(f"{self.where}{path} answered {r.status_code}: "
                                     f"{r.text[:200]}")
        return r

    def status(self) -> WarehouseStatus:
        body = self._get("/v1/status", "read").json()

        def when(v: str | None) -> datetime | None:
            return datetime.fromisoformat(v) if v else None

        return WarehouseStatus(
            [TableStatus(t["table"], int(t["rows"]), when(t["last_part_at"]))
             for t in body["tables"]],
            when(body["newest_raw_at"]),
            [StageCount(c["stage"], int(c["count"])) for c in body["late"]],
            [StageCount(c["stage"], int(c["count"])) for c in body["dead_letters"]])

    def run_counts(self, topic: str, ranges: Sequence[OffsetRange],
                   since: datetime) -> dict[str, int]:
        params: list[tuple[str, str | int]] = [("topic", topic),
                                               ("since_ms", int(since.timestamp() * 1000))]
        params += [("range", f"{r.partition}:{r.start}-{r.end}") for r in ranges]
        body = self._get("/v1/status/run", "read", params).json()
        return {k: int(body[k]) for k in ("late", "dead", "late_customers")}

    def event_time_lag(self) -> dict[str, float]:
        """Each stage's event-time lag behind the wall clock (seconds) from /metrics."""
        text = self._get("/metrics", "metrics").text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "journeys_event_time_lag_seconds":
                for sample in family.samples:
                    out[sample.labels.get("stage", "?")] = float(sample.value)
        return out
