"""``missive dlq replay``: put dead letters back through a processor once the bug is fixed.

Each dead letter is processed again, as an adapter would: the ``before_processing``
hooks run once first and the ``after_processing`` hooks once at the end, and each
message goes through routing, the handling hooks and its handler. The processor's
DLQ is, for the replay, the DLQ being replayed, so that:

* **acked**: the dead letter is deleted from the DLQ;
* **dead-lettered again**: it stays, with its new reason, and its count goes up;
* **nacked** (the handler asks for a later redelivery): it stays unchanged and is
  reported; replay it again later.

A dead letter handled successfully is deleted just after its handler returns: if
the replay is killed in between, the next replay handles it again (at least once).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from collections import Counter
from types import FrameType
from typing import Any

from missive.cli._common import CLIError, format_id, load_processor, open_store, parse_id
from missive.cli._dlq import add_dlq_option
from missive.cli._output import Output, safe_text
from missive.cli._routes import Route, load_message_class, route
from missive.context import Outcome
from missive.dlq import DeadLetter, DeadLetterStore
from missive.errors import DLQWriteError
from missive.message import Message
from missive.processor import Processor
from missive.routing import Router

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``replay`` under ``missive dlq``."""
    replay = sub.add_parser(
        "replay",
        help="process dead letters again; those handled leave the DLQ",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dlq_option(replay)
    replay.add_argument(
        "--processor", required=True, metavar="MODULE:PROCESSOR", help="a processor or adapter"
    )
    replay.add_argument("ids", nargs="*", metavar="ID", help="the dead letters to replay")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.add_argument("--reason", metavar="TEXT", help="replay those whose reason has TEXT")
    replay.add_argument(
        "--message-class",
        metavar="MODULE:CLASS",
        help="rebuild each message as this class (default: the class it was stored with)",
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="only say which handler each would go to"
    )
    replay.add_argument(
        "-v", "--verbose", action="store_true", help="list the dead letters handled too"
    )
    replay.set_defaults(func=_replay)


def _ids(store: DeadLetterStore, args: argparse.Namespace) -> list[bytes]:
    chosen = sum([bool(args.ids), args.all, args.reason is not None])
    if chosen != 1:
        raise CLIError("replay needs exactly one of: IDs, --all, or --reason TEXT")
    if args.all or args.reason is not None:
        return [record.message_id for record in store.records(reason=args.reason)]
    ids = [parse_id(text) for text in args.ids]
    missing = [text for text, i in zip(args.ids, ids, strict=True) if i not in store]
    if missing:
        raise CLIError(f"no dead letter with id {', '.join(map(repr, missing))}; nothing replayed")
    return ids


class _Rebuild:
    """Gives each record's message as the class to replay it as, or ``None`` to skip it.

    A message whose stored class the processor's modules do not define is skipped
    unless a class to use instead is known (``--message-class``, or the adapter's):
    replaying it as a RawMessage would fail, and store it again under that class.
    """

    def __init__(self, out: Output, explicit: type[Message] | None, fallback: type[Message] | None):
        self.out = out
        self.explicit = explicit
        self.fallback = fallback
        self.warned: set[str] = set()

    def __call__(self, record: DeadLetter) -> Message | None:
        message = record.message
        cls = self.explicit
        if cls is None and message.class_name != record.message_class:
            cls = self.fallback
            if record.message_class not in self.warned:
                self.warned.add(record.message_class)
                what = "skipping those" if cls is None else f"replaying as {cls.__name__}"
                self.out.warn(
                    f"message class {record.message_class} is not defined by the processor's "
                    f"modules: {what} (pass --message-class MODULE:CLASS)"
                )
            if cls is None:
                return None
        if cls is None or type(message) is cls:
            return message
        return cls(message.raw_data, record.message_id, record.attributes)


class _Interrupt:
    """While in use, SIGINT stops the replay after the message in hand."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _replay(args: argparse.Namespace, out: Output) -> int:
    processor, adapter_class = load_processor(args.processor)
    explicit = load_message_class(args.message_class) if args.message_class else None
    rebuild = _Rebuild(out, explicit, adapter_class)
    with open_store(args.dlq, args.dlq_table) as store:
        ids = _ids(store, args)
        if args.dry_run:
            return _dry_run(store, ids, rebuild, processor.router, out)
        if not ids:
            out.note("no dead letters to replay")
            return 0
        previous = processor.dlq
        processor.set_dlq(store)
        # The report says what became of each message; the processor's own line is noise.
        processor_logger = logging.getLogger("missive.processor")
        level = processor_logger.level
        processor_logger.setLevel(logging.ERROR)
        try:
            with _Interrupt().installed() as interrupt:
                counts = _process(store, ids, rebuild, processor, out, args.verbose, interrupt)
        finally:
            processor.set_dlq(previous)
            processor_logger.setLevel(level)
    left = len(ids) - sum(counts.values())
    parts = [
        f"{counts['acked']} handled and removed",
        f"{counts['failed']} failed again (kept)",
        f"{counts['nacked']} nacked (kept)",
    ]
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped (kept)")
    if counts["gone"]:
        parts.append(f"{counts['gone']} no longer in the DLQ")
    if left:
        parts.append(f"{left} not replayed (interrupted)")
    out.line(f"replayed {len(ids) - left} of {len(ids)} dead letter(s): {', '.join(parts)}")
    return 1 if counts["failed"] or counts["nacked"] or counts["skipped"] or left else 0


def _process(
    store: DeadLetterStore,
    ids: list[bytes],
    rebuild: _Rebuild,
    processor: Processor[Message],
    out: Output,
    verbose: bool,
    interrupt: _Interrupt,
) -> Counter[str]:
    counts: Counter[str] = Counter()
    try:
        context = processor.context().__enter__()
    except Exception as exc:
        raise CLIError(
            f"the processor's before_processing hooks raised {type(exc).__name__}: {exc}; "
            "nothing replayed"
        ) from None
    failed: BaseException | None = None
    try:
        out.start_progress(len(ids), "replaying")
        for message_id in ids:
            if interrupt.requested:
                out.warn("interrupted: stopping the replay")
                break
            counts[_one(store, message_id, rebuild, context, out, verbose)] += 1
            out.step()
    except BaseException as exc:
        failed = exc
        raise
    finally:
        out.end_progress()
        try:
            context.__exit__(None if failed is None else type(failed), failed, None)
        except Exception as exc:
            out.error(f"the processor's after_processing hooks raised {type(exc).__name__}: {exc}")
            if failed is None:
                raise CLIError("replay finished, but the after_processing hooks failed") from None
    return counts


def _one(
    store: DeadLetterStore,
    message_id: bytes,
    rebuild: _Rebuild,
    context: Any,
    out: Output,
    verbose: bool,
) -> str:
    shown = safe_text(format_id(message_id))
    try:
        record = store.record(message_id)
    except KeyError:
        return "gone"
    message = rebuild(record)
    if message is None:
        return "skipped"
    try:
        outcome = context.process(message)
    except DLQWriteError as exc:
        raise CLIError(
            f"{shown}: failed again and the DLQ could not be updated ({exc.__cause__})"
        ) from None
    if outcome is Outcome.ACKED:
        with contextlib.suppress(KeyError):
            del store[message_id]
        if verbose:
            out.line(f"{shown}: {out.style('handled', 'green')}, removed from the DLQ")
        return "acked"
    if outcome is Outcome.NACKED:
        out.line(f"{shown}: {out.style('nacked', 'yellow')} by its handler; kept unchanged")
        return "nacked"
    again = store.record(message_id)
    out.line(
        f"{shown}: {out.style('failed again', 'red')}: {safe_text(again.summary)} "
        f"(kept; dead-lettered {again.times} times)"
    )
    return "failed"


def _dry_run(
    store: DeadLetterStore, ids: list[bytes], rebuild: _Rebuild, router: Router[Any], out: Output
) -> int:
    rows = []
    for message_id in ids:
        try:
            record = store.record(message_id)
        except KeyError:
            continue
        message = rebuild(record)
        if message is None:
            rows.append([safe_text(format_id(message_id)), out.style("skipped", "red"), "-"])
            continue
        result, text = route(router, message)
        colour = "green" if result is Route.ONE else "red"
        rows.append(
            [safe_text(format_id(message_id)), out.style(result.value, colour), safe_text(text)]
        )
    out.table(["ID", "RESULT", "HANDLER"], rows, wide=2)
    out.note(f"dry run: {len(rows)} dead letter(s) checked, none replayed")
    return 0
