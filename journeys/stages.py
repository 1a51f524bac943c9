"""Which consumer group reads which topic, in processing order: the shared contract
between the stream workers (which commit) and the operations commands (`journeys status`,
`journeys ingest --wait`, which read the commits without loading the worker).

Each stage commits a batch only after its outputs are durable (docs/stream.md "Exactly
once in effect"), so what was produced before some moment is processed once, stage by
stage in this order, each group has committed the end offsets its topic had when the
stage before it got there. Stages keep sending watermark claims, so the internal topics'
ends keep moving: a wait reads each stage's ends only once the stage before it is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from journeys.settings import KafkaConfig


def validate_group(app_id: str) -> str:
    """Consumer group of the validate stage (Faust's own group is the app id)."""
    return f"{app_id}-validate"


def dead_letter_group(app_id: str) -> str:
    """Consumer group of the dead-letter archiver (stream.agents.dead_letters)."""
    return f"{app_id}-dead-letters"


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage's input: its name, the topic it reads and the group that commits it."""

    name: str
    topic: str
    group: str
    rounds: int = 1  # how often a wait checks it (handovers: the stage writes it too)


def stages(kafka: KafkaConfig, app_id: str) -> tuple[Stage, ...]:
    """Every stage in processing order. The handovers topic is written by the customer
    stage itself while absorbing: a wait checks it twice."""
    return (Stage("validate", kafka.raw_topic, validate_group(app_id)),
            Stage("identity", kafka.by_identity_topic, app_id),
            Stage("customers", kafka.by_customer_topic, app_id),
            Stage("handovers", kafka.handovers_topic, app_id, rounds=2),
            Stage("alerts", kafka.step_reached_topic, app_id),
            Stage("dead letters", kafka.dead_letter_topic, dead_letter_group(app_id)))
