"""``missive dlq show``: everything stored about one dead letter; a record as JSON."""

from __future__ import annotations

import argparse
import base64
import json
from datetime import datetime
from typing import Any

from missive.attempts import describe_history, read_history
from missive.cli._common import CLIError, format_id, open_store, parse_id
from missive.cli._filters import add_dlq_option
from missive.cli._output import Output, hex_preview, safe_text
from missive.dlq import DeadLetter, DeadLetterStore
from missive.dlq._codec import encode_attributes, other_payload_prefix

__all__ = ["add_parser", "record_json", "when"]


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``show`` under ``missive dlq``."""
    show = sub.add_parser("show", help="everything stored about one dead letter")
    show.description = _show.__doc__
    add_dlq_option(show)
    show.add_argument("id", metavar="ID", help="the id, as ls shows it")
    mode = show.add_mutually_exclusive_group()
    mode.add_argument("--raw", action="store_true", help="write the payload's exact bytes")
    mode.add_argument("--json", action="store_true", help="as one JSON object, as export")
    show.set_defaults(func=_show)


def when(moment: datetime) -> str:
    """``moment`` as the commands show it: UTC to the second."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def record_json(record: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    """A record as JSON-ready values; ``full`` adds the payload (base64) and traceback."""
    data: dict[str, Any] = {
        "id": format_id(record.message_id),
        "id_b64": base64.b64encode(record.message_id).decode("ascii"),
        "dead_lettered_at": record.dead_lettered_at.isoformat(),
        "first_dead_lettered_at": record.first_dead_lettered_at.isoformat(),
        "times": record.times,
        "size": record.size,
        "handler": record.handler,
        "exc_type": record.exc_type,
        "summary": record.summary,
        "reason": str(record.reason),
        "message_class": record.message_class,
        "attributes": json.loads(encode_attributes(record.attributes)),
    }
    if full:
        data["traceback"] = record.traceback
        data["payload_b64"] = base64.b64encode(record.message.raw_data).decode("ascii")
    return data


def _record(store: DeadLetterStore, text: str) -> DeadLetter:
    try:
        return store.record(parse_id(text))
    except KeyError:
        raise CLIError(f"no dead letter with id {text!r} (ls lists the ids)") from None


def _other_payloads(store: DeadLetterStore, message_id: bytes) -> list[str]:
    """The ids under which the store kept other payloads that came with ``message_id``."""
    prefix = other_payload_prefix(message_id)
    return [format_id(key) for key in store if key.startswith(prefix)]


def _show(args: argparse.Namespace, out: Output) -> int:
    """Show everything stored about one dead letter. The payload is shown as text when
    it is UTF-8 without control characters, else as a hex preview; --raw writes its
    exact bytes to stdout instead (not to a terminal if they are not text). Other
    payloads that came with the same id, which the DLQ keeps under ids of their own
    (ID~other-payload-...), are listed after it."""
    with open_store(args.dlq, args.dlq_table, read_only=True) as store:
        record = _record(store, args.id)
        others = _other_payloads(store, record.message_id)
    payload = record.message.raw_data
    if args.raw:
        if out.tty and _as_text(payload) is None:
            raise CLIError(
                "the payload is not text and stdout is a terminal, which it could disturb: "
                "redirect it (> message.bin) or pipe it (| xxd)"
            )
        stream = getattr(out.stdout, "buffer", None)
        if stream is None:
            raise CLIError("--raw needs a binary stdout")
        out.stdout.flush()
        stream.write(payload)
        stream.flush()
        return 0
    if args.json:
        out.line(json.dumps({**record_json(record, full=True), "other_payloads": others}))
        return 0

    def label(name: str) -> str:
        return out.style(f"{name}:", "bold")

    fields = [
        ("id", format_id(record.message_id)),
        ("message class", record.message_class),
        ("handler", record.handler or "-"),
        ("exception", record.exc_type or "-"),
        ("size", f"{record.size} bytes"),
        ("times", str(record.times)),
        ("first dead-lettered", record.first_dead_lettered_at.isoformat()),
        ("last dead-lettered", record.dead_lettered_at.isoformat()),
        ("attributes", encode_attributes(record.attributes)),
        ("summary", record.summary),
        ("reason", str(record.reason)),
    ]
    for name, value in fields:
        out.line(f"{label(name)} {safe_text(value)}")
    history = read_history(record.attributes)
    if history:  # retried before it was dead-lettered: one attempt a line
        out.line(label("history"))
        out.line(safe_text(describe_history(history), keep_newlines=True))
    if record.traceback:
        out.line(label("traceback"))
        out.line(safe_text(record.traceback.rstrip("\n"), keep_newlines=True))
    text = _as_text(payload)
    if text is None:
        out.line(f"{label('payload')} {len(payload)} bytes, not text; hex preview:")
        out.line(hex_preview(payload))
    else:
        out.line(f"{label('payload')} {len(payload)} bytes of UTF-8 text:")
        out.line(text)
    if others:
        out.line(
            f"{label('other payloads')} {len(others)} more came with this id, kept as: "
            f"{safe_text(' '.join(others))} (show each with: missive dlq show ID)"
        )
    return 0


def _as_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if safe_text(text, keep_newlines=True) == text else None
