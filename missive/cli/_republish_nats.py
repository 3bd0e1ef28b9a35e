"""Publishing dead letters back to NATS JetStream, each confirmed (``replay --to-broker``).

A letter goes to the subject it was consumed from, with ``Nats-Expected-Stream`` set
to its stream (a subject now taken by another stream refuses it), its headers (less
the ``Nats-Expected-*`` conditions of its first publish) and ``x-missive-replays``;
it is confirmed by JetStream's PubAck.

**Nats-Msg-Id.** Every letter is published with its own id as ``Nats-Msg-Id``: the
publisher's id when it had one, else the ``<stream>:<sequence>`` the adapter gave it,
so that its handler sees the same ``message_id`` again. JetStream drops a message
whose ``Nats-Msg-Id`` it stored within the stream's duplicate window (two minutes by
default) and says so in the PubAck (``duplicate``, with the sequence of the message
it kept). Two cases, told apart by that sequence:

* the one kept is the very message that was dead-lettered (a letter replayed soon
  after its first publish): nothing is in the stream for the workers, so the letter
  is kept in the DLQ, with a reason that says to replay it after the window;
* the one kept is a later one (an earlier replay of this letter whose delete was
  lost, by a crash or a stop): the letter is back in the stream already, so it is
  removed. A replay run again within the window thus publishes nothing twice.

Letters from core NATS are never published (:func:`missive.cli._republish.origin`
keeps them): core NATS confirms nothing.

nats-py is asyncio only: the connection runs on a :class:`~missive._aio.LoopThread`
and :meth:`JetStreamPublisher.publish` waits there for each PubAck. Imported only by
a replay to a ``nats://`` URL; nats-py is imported here, so a missing extra is
reported then.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from typing import Any

from missive._aio import LoopThread
from missive.cli._common import CLIError, redact
from missive.cli._replay_loop import RefusedError
from missive.cli._republish import REPLAYS, original_id
from missive.dlq import DeadLetter
from missive.errors import MissingExtraError

try:
    import nats
    import nats.errors
    import nats.js.errors
except ImportError as _exc:
    raise MissingExtraError("nats", "missive dlq replay --to-broker nats://") from _exc

__all__ = ["JetStreamPublisher", "connect", "headers"]

#: Seconds to wait for a connection, then for each PubAck.
TIMEOUT = 10.0
# Conditions of the first publish (expected stream, last sequence...): not this one's.
_CONDITIONS = "nats-expected-"
_MSG_ID = "Nats-Msg-Id"


def connect(url: str, args: argparse.Namespace) -> JetStreamPublisher:
    """A publisher on the NATS server at ``url``.

    :raises CLIError: if it cannot connect.
    """
    return JetStreamPublisher(url)


class JetStreamPublisher:
    """Publishes to JetStream on one connection, waiting for each PubAck.

    :raises CLIError: if the server cannot be reached or refuses the login.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.thread = LoopThread("missive-replay-nats")
        # The duplicate window of each stream, asked when a duplicate needs it.
        self._windows: dict[str, str] = {}
        # What nats-py reports on its own (it would print a traceback otherwise).
        self._errors: list[Exception] = []
        try:
            self.nc: Any = self.thread.run(
                nats.connect(
                    url,
                    name="missive dlq replay",
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                    connect_timeout=round(TIMEOUT),
                    error_cb=self._on_error,
                )
            )
        except Exception as exc:  # nats-py raises many kinds; none is for the user
            self.thread.close()
            cause = self._errors[-1] if self._errors else exc  # says more than "no servers"
            raise CLIError(
                f"cannot connect to NATS at {redact(url)!r} ({type(cause).__name__}); nothing sent"
            ) from None
        self.js = self.nc.jetstream(timeout=TIMEOUT)

    async def _on_error(self, exc: Exception) -> None:
        self._errors.append(exc)

    def publish(self, record: DeadLetter, replays: int) -> None:
        """Publish ``record`` to its subject; return once JetStream stored it (or had it)."""
        attributes = record.attributes
        subject, stream = str(attributes["subject"]), str(attributes["stream"])
        try:
            ack = self.thread.run(
                self.js.publish(
                    subject,
                    record.message.raw_data,
                    stream=stream,
                    headers=headers(record, replays),
                )
            )
        except nats.js.errors.NoStreamResponseError:
            raise RefusedError(f"no JetStream stream takes subject {subject!r} any more") from None
        except nats.js.errors.APIError as exc:
            text = exc.description or f"error {exc.err_code}"
            raise RefusedError(f"JetStream refused it: {text}") from None
        except nats.errors.TimeoutError:
            if self.nc.is_connected:
                raise RefusedError(f"no PubAck from JetStream within {TIMEOUT:g} s") from None
            raise self._lost() from None
        except (nats.errors.Error, OSError):
            raise self._lost() from None
        if ack.duplicate and ack.seq == attributes.get("sequence"):
            raise RefusedError(
                f"JetStream dropped it as a duplicate: stream {stream!r} saw its "
                f"{_MSG_ID} within its duplicate window ({self._window(stream)}); replay it "
                "after that"
            )

    def _window(self, stream: str) -> str:
        if stream not in self._windows:
            try:
                info = self.thread.run(self.nc.jsm().stream_info(stream))
                self._windows[stream] = f"{info.config.duplicate_window:g} s"
            except Exception:  # only for the text: never a reason to stop
                self._windows[stream] = "2 min by default"
        return self._windows[stream]

    def _lost(self) -> CLIError:
        return CLIError(
            f"lost the connection to NATS at {redact(self.url)!r}; the letters confirmed "
            "so far are removed: run the same command again for the others"
        )

    def close(self) -> None:
        """Close the connection and its event loop (quietly: it may be gone)."""
        try:
            with contextlib.suppress(Exception):
                self.thread.run(self.nc.close())
        finally:
            self.thread.close()


def headers(record: DeadLetter, replays: int) -> dict[str, str]:
    """The letter's headers: those stored, less the first publish's conditions, with
    its id as ``Nats-Msg-Id`` and its replay count."""
    stored = record.attributes.get("headers")
    kept = {
        str(name): str(value)
        for name, value in (stored.items() if isinstance(stored, Mapping) else ())
        if not str(name).lower().startswith(_CONDITIONS)
    }
    kept[_MSG_ID] = original_id(record).decode("utf-8", "replace")
    kept[REPLAYS] = str(replays)
    return kept
