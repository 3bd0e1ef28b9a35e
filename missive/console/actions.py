"""What the console's buttons do: replay, archive and purge, each audited.

Each action runs on the dead letters chosen by id (one letter, or the checkboxes
of a selection) or by failure group, through the code the ``missive dlq``
commands use: the store's :meth:`~missive.dlq.DeadLetterStore.archive` and
:meth:`~missive.dlq.DeadLetterStore.delete_many`, and the replay loop
(:class:`~missive.cli._replay_loop.Replay`) with its in-process destination or
the broker's (``--to-broker``). Each one appends an audit entry whose user is the
OS user running the console, marked ``(console)``.
"""

from __future__ import annotations

import argparse
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from missive.cli._archive import DEFAULT_RETENTION, retention
from missive.cli._common import CLIError, format_id, parse_id
from missive.cli._output import Output
from missive.cli._replay import _Rebuild
from missive.cli._replay_loop import Deletes, InProcess, Replay
from missive.dlq import DeadLetter, DeadLetterStore
from missive.dlq.audit import MAX_IDS, AuditEntry, current_user
from missive.dlq.groups import in_group, is_fingerprint
from missive.message import Message
from missive.processor import Processor

__all__ = ["ACTIONS", "COMMAND", "Chosen", "Replayer", "choose", "run_action"]

#: The actions the console runs.
ACTIONS = ("replay", "archive", "purge")
#: What the audit entries of the console give as their command.
COMMAND = "missive dlq serve (web console)"


@dataclass(frozen=True)
class Chosen:
    """The dead letters an action runs on, and how they were chosen."""

    #: Their ids.
    ids: list[bytes]
    #: ``--group ID`` when chosen by group, else ``None``.
    selection: str | None


def choose(store: DeadLetterStore, form: dict[str, list[str]]) -> Chosen:
    """The dead letters a posted form chose: its ``id`` fields, or its ``group``.

    :raises CLIError: if it chose none, or both ways, or names a bad group or id.
    """
    texts = [text for text in form.get("id", []) if text]
    group = (form.get("group") or [""])[0].strip().lower()
    if bool(texts) == bool(group):
        raise CLIError("choose dead letters: tick some, or act on a whole group")
    if group:
        if not is_fingerprint(group):
            raise CLIError("that is not a group id (10 hex digits)")
        ids = [letter.message_id for letter in in_group(store.records(), group)]
        return Chosen(ids, f"--group {group}")
    return Chosen([parse_id(text) for text in texts], None)


class Replayer:
    """Replays dead letters: in process through ``processor``, or to the broker of
    ``broker_url``. One replay at a time (the processor's DLQ is swapped during one).

    :param message_class: the adapter's message class, for letters whose stored class
        the processor's modules do not define (as ``missive dlq replay`` does).
    """

    def __init__(
        self,
        processor: Processor[Any] | None = None,
        message_class: type[Message] | None = None,
        broker_url: str | None = None,
    ) -> None:
        self.processor = processor
        self.message_class = message_class
        self.broker_url = broker_url
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether the console can replay at all."""
        return self.processor is not None or self.broker_url is not None

    def replay(self, store: DeadLetterStore, ids: Sequence[bytes]) -> str:
        """Replay the dead letters ``ids`` of ``store``; what became of them, in words.

        :raises CLIError: if the console cannot replay, or the replay failed.
        """
        out = Output(stdout=io.StringIO(), stderr=io.StringIO())
        with self._lock:
            if self.processor is not None:
                replay = self._in_process(store, ids, self.processor, out)
                done = "handled and removed"
            elif self.broker_url is not None:
                replay = self._to_broker(store, ids, self.broker_url, out)
                done = "confirmed by the broker and removed"
            else:
                raise CLIError(
                    "this console cannot replay: start it with --processor or --broker-url"
                )
        counts = replay.counts
        parts = [f"{counts['acked']} {done}"]
        for key, words in (
            ("failed", "failed again (kept)"),
            ("nacked", "nacked (kept)"),
            ("skipped", "skipped: message class unknown (kept)"),
            ("refused", "not sent: from elsewhere (kept)"),
        ):
            if counts[key]:
                parts.append(f"{counts[key]} {words}")
        return f"replayed {sum(counts.values())} dead letter(s): " + ", ".join(parts)

    def _in_process(
        self,
        store: DeadLetterStore,
        ids: Sequence[bytes],
        processor: Processor[Any],
        out: Output,
    ) -> Replay:
        previous = processor.dlq
        processor.set_dlq(store)
        try:
            with processor.context() as context:
                replay = Replay(
                    InProcess(context),
                    Deletes(store),
                    _Rebuild(out, None, self.message_class),
                    out,
                )
                replay.run(_records(store, ids))
        finally:
            processor.set_dlq(previous)
        return replay

    def _to_broker(
        self, store: DeadLetterStore, ids: Sequence[bytes], url: str, out: Output
    ) -> Replay:
        from missive.cli._republish import ToBroker, broker_url, connect  # extras

        args = argparse.Namespace(broker_url=url, stream_field="data")
        url, kind = broker_url(args)
        publisher = connect(url, kind, args)
        try:
            replay = Replay(ToBroker(kind, publisher), Deletes(store), _message, out)
            replay.run(_records(store, ids))
        finally:
            publisher.close()
        return replay


def _message(letter: DeadLetter) -> Message:
    return letter.message


def _records(store: DeadLetterStore, ids: Sequence[bytes]) -> Iterator[DeadLetter]:
    for message_id in ids:
        try:
            yield store.record(message_id)
        except KeyError:
            continue  # gone meanwhile


def run_action(store: DeadLetterStore, action: str, chosen: Chosen, replayer: Replayer) -> str:
    """Run ``action`` on ``chosen`` and record it in the audit table; what it did.

    A failure is recorded too (``failed: ...``) and raised again.

    :raises CLIError: for an unknown action, or one that failed.
    """
    if action not in ACTIONS:
        raise CLIError(f"unknown action; the console knows {', '.join(ACTIONS)}")
    try:
        if not chosen.ids:
            outcome = f"no dead letters to {action}"
        elif action == "archive":
            expires_at = datetime.now(UTC) + retention(DEFAULT_RETENTION)
            count = store.archive(chosen.ids, expires_at)
            outcome = f"archived {count} dead letter(s) until {expires_at:%Y-%m-%d %H:%M} UTC"
        elif action == "purge":
            outcome = f"purged {store.delete_many(chosen.ids)} dead letter(s)"
        else:
            outcome = replayer.replay(store, chosen.ids)
    except CLIError as exc:
        _audit(store, action, chosen, f"failed: {exc}")
        raise
    except Exception as exc:
        problem = str(exc).splitlines()[0] if str(exc) else ""
        _audit(store, action, chosen, f"failed: {type(exc).__name__}: {problem}"[:500])
        raise CLIError(f"{action} failed: {type(exc).__name__}: {problem}") from None
    _audit(store, action, chosen, outcome)
    return outcome


def _audit(store: DeadLetterStore, action: str, chosen: Chosen, outcome: str) -> None:
    store.audit(
        AuditEntry(
            operation=action,
            ids=tuple(format_id(key) for key in chosen.ids[:MAX_IDS]),
            count=len(chosen.ids),
            selection=chosen.selection,
            user=f"{current_user()} (console)",
            command=COMMAND,
            outcome=outcome,
        )
    )
