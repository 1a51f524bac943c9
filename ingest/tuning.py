"""Options of the ingest producers (kafka-python): measured defaults per role, plus
operator overrides from settings (`JOURNEYS_KAFKA__PRODUCER`, a JSON object of
kafka-python option names, e.g. '{"compression_type": "lz4", "linger_ms": 20}')."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from journeys.errors import ConfigError

CLIENTS = ("kafka-python", "confluent-kafka")


@dataclass(frozen=True, slots=True)
class ProducerTuning:
    """Producer options, measured on the local broker (see docs/ingest.md, bench/).

    - acks=all: a 202 from the collector means the record is replicated (acks=0 loses
      whole batches on Tansu); idempotence on (kafka-python 3.x supports it there) so
      retries do not duplicate.
    - gzip: the only codec without extra wheels; it was *faster* than none here
      (15.5k vs 11k msgs/s) because fewer bytes cross the broker, and it cuts network.
    - linger 5 ms + 256 KiB batches: a request carries many records without adding
      visible latency to a 202.
    - short timeouts: a dead broker shows up as a failed delivery within seconds,
      which trips the breaker; clients then get 503 instead of a hanging request.
    """

    acks: str | int = "all"
    enable_idempotence: bool = True
    compression_type: str | None = "gzip"
    linger_ms: int = 5
    batch_size: int = 256 * 1024
    max_in_flight_requests_per_connection: int = 5
    delivery_timeout_ms: int = 10_000
    request_timeout_ms: int = 5_000
    max_block_ms: int = 5_000
    bootstrap_timeout_ms: int = 5_000
    reconnect_backoff_max_ms: int = 1_000
    max_request_size: int = 1_048_576
    # Ours, not kafka-python's: unconfirmed records allowed before refusing more.
    max_pending: int = 100_000
    retry_after_s: float = 2.0
    # The client library: "kafka-python", or "confluent-kafka" (librdkafka: ~1–2 µs of
    # Python per record instead of ~60, docs/performance.md), which the bulk roles use.
    client: str = "kafka-python"

    @classmethod
    def for_bulk(cls) -> ProducerTuning:
        """Importers and the generator: wait longer instead of failing, bigger batches."""
        return cls(linger_ms=20, batch_size=1024 * 1024, delivery_timeout_ms=120_000,
                   request_timeout_ms=30_000, max_block_ms=60_000,
                   bootstrap_timeout_ms=30_000, max_pending=200_000,
                   client="confluent-kafka")

    def client_options(self) -> dict[str, Any]:
        opts = asdict(self)
        for ours in ("max_pending", "retry_after_s", "client"):
            opts.pop(ours)
        return opts

    def with_overrides(self, options: dict[str, Any]) -> ProducerTuning:
        """These options with an operator's overrides; unknown names or wrong types are
        a ConfigError (a typo must not be ignored silently)."""
        if not options:
            return self
        known = {f.name: f for f in fields(self)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"unknown producer option(s) {unknown}; known: {sorted(known)}")
        for name, value in options.items():
            default = getattr(self, name)
            if name == "acks":
                ok = value in ("all", 0, 1, -1) and not isinstance(value, bool)
            elif name == "client":
                ok = value in CLIENTS
            elif name == "compression_type":
                ok = value is None or isinstance(value, str)
            elif isinstance(value, bool) or isinstance(default, bool):
                ok = isinstance(value, bool) and isinstance(default, bool)
            else:
                ok = isinstance(value, type(default)) or (
                    isinstance(default, float) and isinstance(value, int))
            if not ok:
                raise ConfigError(f"producer option {name}={value!r}: expected a value like "
                                  f"{default!r}")
        return replace(self, **options)
