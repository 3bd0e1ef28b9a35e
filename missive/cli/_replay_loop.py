"""The replay loop: each dead letter to a destination, deletes committed in batches.

The loop is the same whatever a dead letter is replayed to: it paces the letters
(``--rate``), sends each to a :class:`Destination` (:class:`InProcess`, the
processor in this process, or a broker's publisher for ``--to-broker``), reports
what became of it, and deletes those that
were handled in batches: one commit every ``batch`` letters or every
``flush_every`` seconds, whichever comes first. A replay killed between two
commits handles again, next time, at most the letters since the last commit
(at least once, as a broker's redelivery would). SIGINT and SIGTERM stop it after
the letter in hand; what was handled is committed before it returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, Protocol

from missive.cli._common import CLIError, format_id
from missive.cli._output import Output, safe_text
from missive.cli._replay_pace import RateLimit
from missive.context import Outcome
from missive.dlq import DeadLetter, DeadLetterStore
from missive.errors import DLQWriteError
from missive.message import Message

__all__ = [
    "BATCH",
    "Deletes",
    "Destination",
    "InProcess",
    "RefusedError",
    "Replay",
    "Stop",
    "summarise",
]

#: Dead letters handled between two commits of their deletes.
BATCH = 500
#: At most this many seconds between two commits (a slow or rate-limited replay).
FLUSH_EVERY = 1.0


class RefusedError(Exception):
    """Raised by :meth:`Destination.send` for a dead letter it could not take: kept
    unchanged, reported with this one-line reason (never the payload)."""


class Destination(Protocol):
    """Where a replay sends a dead letter: ``"acked"`` once it is handled for good (the
    loop then deletes it), ``"failed"`` if it is stored again, ``"nacked"`` if it
    stays unchanged for a later replay; :class:`RefusedError` if it could not be sent."""

    #: What an acked letter became, for ``--verbose``: ``"handled"``, ``"sent"``...
    done: str

    def send(self, record: DeadLetter, message: Message) -> str:
        """Replay ``message`` (rebuilt from ``record``); what became of it."""


class InProcess:
    """Replays through a processor's open context, in this process.

    :param context: from ``processor.context()``, with the DLQ being replayed set as
        the processor's DLQ, so a letter failing again is written back to it.
    """

    done = "handled"

    def __init__(self, context: Any) -> None:
        self.context = context

    def send(self, record: DeadLetter, message: Message) -> str:
        """Process ``message``; ``acked``, ``nacked`` or ``failed`` (dead-lettered again)."""
        try:
            outcome = self.context.process(message)
        except DLQWriteError as exc:
            raise CLIError(
                f"{safe_text(format_id(record.message_id))}: failed again and the DLQ "
                f"could not be updated ({exc.__cause__})"
            ) from None
        if outcome is Outcome.ACKED:
            return "acked"
        return "nacked" if outcome is Outcome.NACKED else "failed"


class Stop:
    """While installed, SIGINT and SIGTERM ask the replay to stop after the letter in hand."""

    def __init__(self) -> None:
        #: The name of the signal that asked, once one did.
        self.signal: str | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        """Catch the two signals in the block (only on the main thread, where Python
        delivers them)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Deletes:
    """The ids of handled dead letters, deleted with one commit every ``batch`` of them
    or every ``every`` seconds.

    :param store: the DLQ being replayed.
    :param clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        store: DeadLetterStore,
        *,
        batch: int = BATCH,
        every: float = FLUSH_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.batch = batch
        self.every = every
        self._clock = clock
        self._pending: list[bytes] = []
        self._since = clock()
        #: How many were deleted (committed) so far.
        self.committed = 0

    def add(self, message_id: bytes) -> None:
        """Delete ``message_id`` with the next commit; commit if the batch is full."""
        self._pending.append(message_id)
        if len(self._pending) >= self.batch:
            self.commit()

    def tick(self) -> None:
        """Commit if there is something to commit and the last commit is old enough."""
        if self._pending and self._clock() - self._since >= self.every:
            self.commit()

    def commit(self) -> None:
        """Delete the pending ids now, in one commit."""
        pending, self._pending = self._pending, []
        self._since = self._clock()
        if pending:
            self.store.delete_many(pending)
            self.committed += len(pending)


class Replay:
    """Sends dead letters to a destination one by one, counting what became of them.

    :param rebuild: gives each record's message as the class to replay it as, or
        ``None`` to skip it (kept).
    :param limit: spaces the letters out (``--rate``), if given.
    """

    def __init__(
        self,
        destination: Destination,
        deletes: Deletes,
        rebuild: Callable[[DeadLetter], Message | None],
        out: Output,
        *,
        verbose: bool = False,
        limit: RateLimit | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.destination = destination
        self.deletes = deletes
        self.rebuild = rebuild
        self.out = out
        self.verbose = verbose
        self.limit = limit
        self.stop = stop
        #: What became of the letters: acked, failed, nacked, refused, skipped.
        self.counts: Counter[str] = Counter()
        #: Whether a stop request ended the replay before its letters did.
        self.stopped = False

    def run(self, records: Iterable[DeadLetter]) -> None:
        """Replay ``records`` in order, until they end or a stop is requested; the
        deletes of those handled are committed before this returns or raises."""
        try:
            for record in records:
                if self.stop() or (self.limit is not None and not self.limit.wait(self.stop)):
                    self.stopped = True
                    break
                self.counts[self._one(record)] += 1
                self.out.step()
                self.deletes.tick()
        finally:
            self.deletes.commit()

    def _one(self, record: DeadLetter) -> str:
        message = self.rebuild(record)
        if message is None:
            return "skipped"
        shown = safe_text(format_id(record.message_id))
        try:
            outcome = self.destination.send(record, message)
        except RefusedError as exc:
            self.out.line(
                f"{shown}: {self.out.style('not sent', 'red')}: {safe_text(str(exc))} (kept)"
            )
            return "refused"
        if outcome == "acked":
            self.deletes.add(record.message_id)
            if self.verbose:
                done = self.destination.done
                self.out.line(f"{shown}: {self.out.style(done, 'green')}, removed from the DLQ")
        elif outcome == "nacked":
            self.out.line(
                f"{shown}: {self.out.style('nacked', 'yellow')} by its handler; kept unchanged"
            )
        else:
            self.out.line(
                f"{shown}: {self.out.style('failed again', 'red')}: {self._again(record)}"
            )
        return outcome

    def _again(self, record: DeadLetter) -> str:
        try:
            again = self.deletes.store.record(record.message_id)
        except KeyError:
            return "(no longer in the DLQ)"
        return f"{safe_text(again.summary)} (kept; dead-lettered {again.times} times)"


def summarise(
    replay: Replay,
    total: int,
    gone: int,
    stop: Stop,
    out: Output,
    outcomes: list[str],
    *,
    did: str,
    do: str,
    removed: str,
    where: str = "",
) -> bool:
    """Print what a replay of ``total`` letters did: ``outcomes``, the letters
    ``gone`` from the DLQ meanwhile, and, if it was stopped, those left and how to go
    on. ``did``/``do``: its verb ("replayed"/"replay"); ``removed``: which letters it
    removed ("handled"); ``where``: after the count (" to URL"). Returns whether it
    was stopped."""
    done = sum(replay.counts.values())
    # Stopped, the letters not reached cannot be told from those gone meanwhile.
    left, gone = (total - done, 0) if replay.stopped else (0, gone)
    parts = list(outcomes)
    if gone:
        parts.append(f"{gone} no longer in the DLQ")
    if replay.stopped:
        parts.append(f"{left} not {did} (stopped)")
    out.line(f"{did} {done} of {total} dead letter(s){where}: {', '.join(parts)}")
    if replay.stopped:
        out.note(
            f"missive: stopped by {stop.signal or 'a signal'} after {done} of {total} dead "
            f"letter(s), {removed} ones removed; run the same command again to {do} the "
            f"{left} left"
        )
    return replay.stopped
