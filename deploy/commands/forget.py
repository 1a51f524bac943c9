"""`journeys forget ID…`: forget customers — the stream's state first, then every
warehouse row of each customer and its linked anonymous ids, with an audit row
(docs/operations.md "Forget a customer"; journeys.control, warehouse.forget)."""

from __future__ import annotations

import getpass
import time
from typing import Any

import typer
from rich.console import Console

from deploy.commands.ops import _KAFKA, _PREFIX


def _wait_stream(target: Any, sent: dict[int, int], timeout_s: float, out: Console) -> None:
    """Until the identity stage has committed past the forget envelopes, then the
    customer stage (and its handovers) past what their topics held by then."""
    from deploy.ops import offsets
    from deploy.ops.wait import _wait_stage
    from journeys.stages import stages

    deadline = time.monotonic() + timeout_s
    servers = target.kafka.bootstrap_servers
    for stage in stages(target.kafka, target.app_id):
        if stage.name in ("validate", "alerts", "dead letters"):
            continue
        goal = sent if stage.name == "identity" else {
            p: e for (_t, p), e in offsets.end_offsets(
                servers, offsets.partitions(servers, [stage.topic])).items()}
        _wait_stage(target, stage, goal, deadline, lambda *_a: None)
        out.print(f"  stream: {stage.name} stage has processed it")


def _direct(settings: Any, target: Any, ids: list[str], dry_run: bool, timeout_s: float,
            out: Console) -> None:
    from journeys.control import send_forget
    from warehouse import forget
    from warehouse.connect import connect

    wh = connect(settings.warehouse, create_database=False)
    try:
        for cid in ids:
            p = forget.plan(wh, cid)
            rows = ", ".join(f"{t} {n:,}" for t, n in p.rows.items() if n) or "no rows"
            out.print(f"{forget.subject(cid)}: {len(p.anonymous_ids)} linked anonymous id(s); "
                      f"warehouse: {rows}")
            if dry_run:
                continue
            sent = send_forget(target.kafka, cid, p.anonymous_ids)
            out.print(f"  stream: forget sent to {target.kafka.by_identity_topic} "
                      f"partitions {sorted(sent)}")
            _wait_stream(target, sent, timeout_s, out)
            forget.apply(wh, forget.plan(wh, cid), progress=lambda t: out.print(
                f"  warehouse: {t} done"))
            forget.audit(wh, p, requested_by=getpass.getuser(), via="cli",
                         stream="forgotten before the warehouse delete (waited)")
            out.print(f"  forgotten: {p.total:,} rows deleted; audit row written")
    finally:
        wh.close()


def _through_api(url: str, ids: list[str], dry_run: bool, out: Console) -> None:
    """A stack's chdb warehouse is locked by its process: its API forgets (and sends the
    stream its forget, without waiting for it)."""
    import httpx

    from deploy.ops.sources import _key_for
    from journeys.errors import ServiceUnavailable

    if dry_run:
        raise ServiceUnavailable("--dry-run needs the warehouse itself; the stack's chdb "
                                 "is held by its process (stop it, or use a server)")
    key = _key_for("admin")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for cid in ids:
        r = httpx.delete(f"{url}/v1/customers/{cid}", headers=headers, timeout=600)
        if r.status_code != 200:
            raise ServiceUnavailable(f"{url} answered {r.status_code}: {r.text[:200]}")
        body = r.json()
        out.print(f"{body['subject']}: {body['anonymous_ids']} linked anonymous id(s); "
                  f"{body['total']:,} rows deleted; stream: {body['stream']}")


def register(app: typer.Typer) -> None:
    @app.command("forget")
    def forget_command(
        ids: list[str] = typer.Argument(..., help="customer ids to forget"),
        dry_run: bool = typer.Option(False, "--dry-run", help="count what would go; "
                                     "change nothing"),
        wait_timeout: float = typer.Option(600.0, "--wait-timeout",
                                           help="seconds to wait for the stream"),
        bootstrap_servers: str = _KAFKA,
        topic_prefix: str = _PREFIX,
    ) -> None:
        """Forget customers: the stream's state (and their devices' links) first, then
        their rows and their linked anonymous ids' rows in every warehouse table, with
        an audit row (who, when, rows per table; not the data). Safe to run twice."""
        from deploy.ops.context import hinted, ops_target

        out = Console(soft_wrap=True)
        settings, target = ops_target(bootstrap_servers, topic_prefix, Console(stderr=True))
        with hinted(target):
            if settings.warehouse.backend == "chdb" and target.stack is not None:
                _through_api(target.stack.stack.api_url.rstrip("/"), ids, dry_run, out)
            else:
                _direct(settings, target, ids, dry_run, wait_timeout, out)
