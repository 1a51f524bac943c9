"""`journeys dlq list|show|redrive`: the dead-letter topic, read and redriven
(deploy.ops.letters, deploy.ops.dlq_io; docs/operations.md "Dead letters")."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from journeys.timeutil import ms_to_iso

dlq_app = typer.Typer(name="dlq", no_args_is_help=True,
                      help="Dead letters: list, show, and redrive them after a fix.")

_REFS = typer.Argument(help="dead letters as PARTITION:OFFSET (from `dlq list`)")
_REASON = typer.Option(None, "--reason", help="reason contains this text (any case)")
_STAGE = typer.Option(None, "--stage", help="collector, import, generate, validate, "
                      "customers, identity, alerts, alert_webhook (repeat for several)")
_SINCE = typer.Option(None, "--since", help="received at or after: ISO-8601 or e.g. 2h (ago)")
_UNTIL = typer.Option(None, "--until", help="received before: ISO-8601 or e.g. 30m (ago)")
_KAFKA = typer.Option(None, "--bootstrap-servers", "-b", help="Kafka bootstrap servers "
                      "(default: settings/env, else a running `journeys up`)")
_PREFIX = typer.Option(None, "--topic-prefix", help="topic name prefix (default: settings)")


def _err() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _time(text: str | None, flag: str) -> int | None:
    """ISO-8601, or a duration meaning that long ago."""
    from journeys.timeutil import datetime_to_ms, now_ms, parse_duration_ms

    if text is None:
        return None
    try:
        return now_ms() - parse_duration_ms(text.lstrip("-"))
    except ValueError:
        pass
    try:
        return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise typer.BadParameter(f"{flag} {text!r}: use ISO-8601 or e.g. 2h") from None


def _select(refs: list[str] | None, reason: str | None, stage: list[str] | None,
            since: str | None, until: str | None) -> Any:
    from deploy.ops.letters import LetterFilter, parse_ref

    try:
        parsed = tuple(parse_ref(r) for r in refs or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return LetterFilter(reason=reason, stages=tuple(stage or ()), refs=parsed,
                        since_ms=_time(since, "--since"), until_ms=_time(until, "--until"))


def _load(bootstrap: str | None, prefix: str | None, selection: Any) -> tuple[Any, Any, Any]:
    """(settings, kafka, (matching letters, redrive marks)), the broker found as
    every command finds it (deploy.discovery)."""
    from deploy.ops.context import hinted, ops_target
    from deploy.ops.dlq_io import read_letters, read_marks

    err = _err()
    settings, target = ops_target(bootstrap, prefix, err)
    with hinted(target), err.status(f"reading {target.kafka.dead_letter_topic} …") as status:
        def progress(done: int, total: int) -> None:
            status.update(f"reading {target.kafka.dead_letter_topic}: {done:,}/{total:,}")

        letters = read_letters(target.kafka, selection, progress)
        marks = read_marks(target.kafka)
    return settings, target.kafka, (letters, marks)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _state(letter: Any, marks: Any) -> str:
    mark = marks.get(letter.key)
    return "-" if mark is None else mark.state


def _as_json(letter: Any, marks: Any) -> dict[str, Any]:
    import base64

    text = letter.original.decode("utf-8", errors="replace")
    return {"ref": letter.ref, "topic": letter.topic, "partition": letter.partition,
            "offset": letter.offset, "stage": letter.stage, "reason": letter.reason,
            "event_id": letter.event_id, "received_at": ms_to_iso(letter.received_at_ms)
            if letter.received_at_ms else None, "redriven": _state(letter, marks),
            "original": text, "original_base64": base64.b64encode(letter.original).decode()}


def _dump(doc: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


@dlq_app.command("list")
def list_letters(
    refs: Annotated[list[str] | None, _REFS] = None, reason: str = _REASON,
    stage: list[str] = _STAGE, since: str = _SINCE, until: str = _UNTIL,
    limit: int = typer.Option(50, min=1, help="show the most recent N (all are counted)"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout (all that match)"),
    bootstrap_servers: str = _KAFKA, topic_prefix: str = _PREFIX,
) -> None:
    """Dead letters that match, newest last, with counts by stage and reason. Reads only."""
    _s, kafka, (letters, marks) = _load(bootstrap_servers, topic_prefix,
                                        _select(refs, reason, stage, since, until))
    if as_json:
        _dump([_as_json(x, marks) for x in letters])
        return
    out = Console(soft_wrap=True)
    shown = sorted(letters, key=lambda x: (x.received_at_ms or 0, x.partition, x.offset))
    table = Table(title=f"{kafka.dead_letter_topic}: {len(letters):,} match"
                  + (f", the last {limit} shown" if len(letters) > limit else ""),
                  title_justify="left")
    for name in ("ref", "received (UTC)", "stage", "redriven", "event id", "reason"):
        table.add_column(name)
    for x in shown[-limit:]:
        at = ms_to_iso(x.received_at_ms)[:19].replace("T", " ") if x.received_at_ms else "-"
        table.add_row(x.ref, at, x.stage, _state(x, marks), escape(_cut(x.event_id or "-", 24)),
                      escape(_cut(x.reason, 36)))
    out.print(table)
    for (stage_name, code), n in Counter((x.stage, x.reason.split(":", 1)[0])
                                         for x in letters).most_common():
        out.print(f"  {stage_name}: {code} ×{n:,}")


@dlq_app.command()
def show(
    refs: Annotated[list[str] | None, _REFS] = None, reason: str = _REASON,
    stage: list[str] = _STAGE, since: str = _SINCE, until: str = _UNTIL,
    raw: bool = typer.Option(False, "--raw", help="only the original bytes, one letter per "
                             "line, on stdout (pipe them into a fix)"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
    bootstrap_servers: str = _KAFKA, topic_prefix: str = _PREFIX,
) -> None:
    """The original bytes of dead letters, with reason and where they were read."""
    _s, _k, (letters, marks) = _load(bootstrap_servers, topic_prefix,
                                     _select(refs, reason, stage, since, until))
    if as_json:
        _dump([_as_json(x, marks) for x in letters])
    elif raw:
        for x in letters:
            sys.stdout.buffer.write(x.original + b"\n")
    else:
        out = Console(soft_wrap=True)
        for x in letters:
            out.rule(f"{x.ref} of {x.topic}")
            out.print(f"stage {x.stage}; received "
                      f"{ms_to_iso(x.received_at_ms) if x.received_at_ms else '-'}; "
                      f"event id {escape(x.event_id or '-')}; redriven: {_state(x, marks)}")
            out.print(f"reason: {escape(x.reason)}")
            out.print(escape(x.original.decode("utf-8", errors="backslashreplace")),
                      highlight=False)
    if not letters:
        _err().print("no dead letter matches")
        raise typer.Exit(1)


@dlq_app.command()
def redrive(
    refs: Annotated[list[str] | None, _REFS] = None, reason: str = _REASON,
    stage: list[str] = _STAGE, since: str = _SINCE, until: str = _UNTIL,
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be sent"),
    force: bool = typer.Option(False, help="also send originals today's rules refuse"),
    retry_in_doubt: bool = typer.Option(False, help="send letters a crashed redrive left "
                                        "marked `sending` (they may have been sent)"),
    bootstrap_servers: str = _KAFKA, topic_prefix: str = _PREFIX,
) -> None:
    """Re-produce the original bytes of the matching dead letters into the raw topic
    after a fix (channels, definitions, ...). Each dead letter at most once: a second
    run sends nothing again (the redrive log, deploy.ops.letters)."""
    from deploy.commands._redrive import run_redrive

    settings, kafka, (letters, marks) = _load(bootstrap_servers, topic_prefix,
                                              _select(refs, reason, stage, since, until))
    run_redrive(settings, kafka, letters, marks, dry_run=dry_run, force=force,
                retry_in_doubt=retry_in_doubt)


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app)
