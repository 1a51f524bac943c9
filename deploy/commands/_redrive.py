"""What `journeys dlq redrive` prints and does, given the letters it selected."""

from __future__ import annotations

from collections import Counter
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape


def _summary(out: Console, plan: Any) -> None:
    out.print(f"to send: {len(plan.send):,}")
    if plan.done:
        out.print(f"already redriven (skipped): {len(plan.done):,}")
    if plan.in_doubt:
        out.print(f"[yellow]in doubt[/] (a redrive died after marking them `sending`; "
                  f"skipped, --retry-in-doubt sends them): "
                  f"{', '.join(x.ref for x, _m in plan.in_doubt[:20])}")
    if plan.not_redrivable:
        stages = Counter(x.stage for x in plan.not_redrivable)
        out.print("not events (internal envelopes or alert bodies; skipped): "
                  + ", ".join(f"{s} ×{n}" for s, n in stages.most_common()))
    if plan.still_invalid:
        codes = Counter(r.split(":", 1)[0] for _x, r in plan.still_invalid)
        out.print("[bold yellow]still invalid under today's rules[/] (skipped: fix the "
                  "settings first, e.g. JOURNEYS_CHANNELS, or --force): "
                  + ", ".join(f"{c} ×{n}" for c, n in codes.most_common()))


def _warn_late(err: Console, settings: Any, kafka: Any, plan: Any) -> None:
    """Redriven events older than their raw partition's head are late: say so first."""
    from deploy.ops import offsets
    from deploy.ops.letters import late_among
    from ingest.heads import newest_event_times
    from journeys.timeutil import format_duration_ms

    partitions = offsets.partitions(kafka.bootstrap_servers, [kafka.raw_topic])
    late = late_among(plan.send, newest_event_times(kafka), partitions.get(kafka.raw_topic, 0),
                      settings.allowed_lateness_ms)
    if late:
        err.print(f"[bold red]warning:[/] {late:,} of them are older than what their raw "
                  f"partition already holds by more than the allowed lateness "
                  f"({format_duration_ms(settings.allowed_lateness_ms)}): the stream will "
                  "count them late and leave them out of sessions and journeys (kept in the "
                  "raw table; `journeys replay` re-applies them)")


def run_redrive(settings: Any, kafka: Any, letters: list[Any], marks: Any, *,
                dry_run: bool, force: bool, retry_in_doubt: bool) -> None:
    """Plan, warn, send (unless --dry-run), report."""
    from deploy.ops.dlq_io import redrive
    from deploy.ops.letters import plan as make_plan
    from journeys.events import EventValidator

    out, err = Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)
    plan = make_plan(letters, marks, EventValidator(settings.channels), force=force,
                     retry_in_doubt=retry_in_doubt)
    out.print(f"{len(letters):,} dead letters match in {kafka.dead_letter_topic}")
    _summary(out, plan)
    if not plan.send:
        out.print("nothing to redrive")
        return
    _warn_late(err, settings, kafka, plan)
    if dry_run:
        for x, _tp in plan.send[:50]:
            out.print(f"  would send {x.ref} ({x.stage}: {escape(x.reason[:60])}) "
                      f"event {escape(x.event_id or '-')}")
        out.print(f"dry run: would send {len(plan.send):,} to {kafka.raw_topic}; nothing sent")
        return
    result = redrive(kafka, plan.send)
    out.print(f"[green]redriven:[/] {len(result.sent):,} original(s) sent to {kafka.raw_topic}"
              f", each marked in {kafka.redrive_log_topic} (a second run skips them)")
    if result.failed:
        for x, why in result.failed[:20]:
            err.print(f"  {x.ref}: {escape(why)}")
        err.print(f"[bold red]warning:[/] {len(result.failed):,} not confirmed: left marked "
                  "`sending` (in doubt); check and rerun with --retry-in-doubt")
        raise typer.Exit(1)
