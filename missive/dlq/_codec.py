"""What every database DLQ shares: attributes as JSON, reasons, times and message classes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from missive.dlq.base import DeadLetter
from missive.message import Message, RawMessage, message_class_named
from missive.reason import DeadLetterReason

__all__ = [
    "BYTES_TAG",
    "OTHER_PAYLOAD",
    "MessageClasses",
    "checked_entry",
    "dead_letter",
    "decode_attributes",
    "encode_attributes",
    "format_time",
    "log_stored",
    "other_payload_prefix",
    "parse_time",
    "reason_fields",
    "storage_keys",
    "utc",
]

#: The key of the one-key JSON object that stands for a ``bytes`` attribute value.
BYTES_TAG = "__missive_bytes_b64__"

# Fixed width, so that stored times sort and compare as text.
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"


def _key(key: Any) -> str:
    # As the json module spells the keys it takes; any other key as its str.
    if key is True or key is False or key is None:
        return json.dumps(key)
    return key if isinstance(key, str) else str(key)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {_key(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return str(value)


def _tagged(value: Any) -> Any:
    # What the json module cannot encode itself, as _jsonable has it.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    return str(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_tagged)


def encode_attributes(attributes: Mapping[str, Any]) -> str:
    """``attributes`` as JSON text.

    ``bytes`` values become ``{BYTES_TAG: base64}`` and read back as ``bytes``; tuples
    become lists; keys become strings (``True``, ``False`` and ``None`` spelt as JSON
    spells them); any other value JSON cannot hold is stored as its ``str``.
    """
    try:  # the json module's own walk, when every key is one it takes
        return _ENCODER.encode(attributes if type(attributes) is dict else dict(attributes))
    except (TypeError, ValueError):
        return json.dumps(_jsonable(attributes), separators=(",", ":"))


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and isinstance(obj.get(BYTES_TAG), str):
        try:
            return base64.b64decode(obj[BYTES_TAG], validate=True)
        except binascii.Error:
            return obj
    return obj


def decode_attributes(text: str) -> dict[str, Any]:
    """The attributes that :func:`encode_attributes` turned into ``text``."""
    value = json.loads(text, object_hook=_untag)
    return value if isinstance(value, dict) else {}


def checked_entry(message_id: object, value: tuple[Message, str]) -> tuple[Message, str]:
    """``(message, reason)`` to store under ``message_id``, checked as the contract requires.

    :raises TypeError: if the message is not a :class:`~missive.Message`.
    :raises ValueError: if ``message_id`` is not the message's own id.
    """
    message, reason = value
    if not isinstance(message, Message):
        raise TypeError(f"a dead letter's message must be a Message, not {message!r}")
    if type(message_id) is not bytes or message_id != message.message_id:
        raise ValueError(
            f"a dead letter is stored under its message's id {message.message_id!r}, "
            f"not {message_id!r}"
        )
    return message, reason


#: Put between a message id and a digest of its payload to name the dead letter of a
#: different payload that came with an id already stored (see :func:`storage_keys`).
OTHER_PAYLOAD = b"~other-payload-"
_MAX_KEYS = 100


def storage_keys(message_id: bytes, raw_data: bytes) -> Iterator[bytes]:
    """The keys to try, in turn, for a dead letter of ``message_id`` with ``raw_data``.

    The first is the id itself. The store writes under the first key that is free or
    holds the same bytes, so a stored payload is never replaced by a different one:
    another payload under a reused id goes to ``id~other-payload-<digest>``, a key
    that says so and that the same payload finds again when it is redelivered. Keys
    with ``-2``, ``-3``... after the digest follow only should two digests collide.
    """
    yield message_id
    base = message_id + OTHER_PAYLOAD + hashlib.sha256(raw_data).hexdigest()[:16].encode()
    yield base
    for number in range(2, _MAX_KEYS):
        yield base + b"-%d" % number


def log_stored(logger: logging.Logger, message_id: bytes, key: bytes, size: int) -> None:
    """Say a dead letter of ``message_id`` is stored under ``key``: WARNING when it is
    another payload under a reused id (naming both keys, never the payloads)."""
    if key != message_id:
        logger.warning(
            "dead letter %r came with a payload other than the one stored under its "
            "id; kept both, the new one as %r",
            message_id,
            key,
        )
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("stored dead letter %r (%d bytes)", key, size)


def other_payload_prefix(message_id: bytes) -> bytes:
    """What the keys of ``message_id``'s other payloads start with."""
    return message_id + OTHER_PAYLOAD


def reason_fields(reason: str) -> tuple[str, str, str | None, str | None, str | None]:
    """``(reason, summary, handler, exc_type, traceback)`` of a reason or plain ``str``."""
    if not isinstance(reason, str):
        raise TypeError(f"a dead letter's reason must be a str, not {type(reason).__name__}")
    if isinstance(reason, DeadLetterReason):
        return (
            _storable(str(reason)),
            _storable(reason.summary),
            _optional(reason.handler),
            _optional(reason.exc_type),
            _optional(reason.traceback),
        )
    text = _storable(str(reason))
    return text, text, None, None, None


def _optional(text: str | None) -> str | None:
    return None if text is None else _storable(text)


def _storable(text: str) -> str:
    # Exception text can hold lone surrogates (bytes decoded with "surrogateescape"),
    # which no database stores as UTF-8: escape them rather than fail the write and
    # leave the message unacked forever.
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def utc(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC.

    :raises ValueError: if it is naive (its time zone would be a guess).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} must be an aware datetime, such as datetime.now(UTC), not naive {moment}"
        )
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """``moment`` (aware) as fixed-width ISO-8601 UTC text, which sorts as time does."""
    return utc(moment, "a dead letter's time").strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """The aware UTC datetime that :func:`format_time` wrote as ``text``."""
    return datetime.fromisoformat(text).astimezone(UTC)


class MessageClasses:
    """Finds the class to rebuild a stored message with, never importing anything.

    A class given here wins; then any :class:`~missive.Message` subclass the program
    has already defined (:func:`missive.message.message_class_named`); otherwise the
    message is rebuilt as a :class:`~missive.RawMessage`.
    """

    def __init__(self, classes: Iterable[type[Message]], logger: logging.Logger) -> None:
        self._classes: dict[str, type[Message]] = {}
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Message)):
                raise TypeError(f"message_classes must hold Message subclasses, not {cls!r}")
            self._classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
        self._logger = logger

    def build(
        self, class_name: str, raw_data: bytes, message_id: bytes, attributes: Mapping[str, Any]
    ) -> Message:
        """A message of the class named ``class_name``, or a RawMessage if it is unknown."""
        cls = self._classes.get(class_name) or message_class_named(class_name)
        if cls is None:
            self._logger.debug(
                "dead letter %r: message class %s is not imported; read as RawMessage",
                message_id,
                class_name,
            )
            return RawMessage(raw_data, message_id, attributes)
        try:
            return cls(raw_data, message_id, attributes)
        except Exception as exc:
            self._logger.warning(
                "dead letter %r: message class %s could not be built (%s); read as RawMessage",
                message_id,
                class_name,
                type(exc).__name__,
            )
            return RawMessage(raw_data, message_id, attributes)


def dead_letter(
    classes: MessageClasses,
    message_id: bytes,
    raw_data: bytes,
    class_name: str,
    attributes_text: str,
    reason: tuple[str, str, str | None, str | None, str | None],
    first: datetime,
    last: datetime,
    times: int,
    archived: tuple[datetime | None, datetime | None] = (None, None),
) -> DeadLetter:
    """The record of a stored row; ``reason`` is what :func:`reason_fields` gave.

    ``first`` and ``last`` are aware datetimes (converted to UTC here), as are the
    times ``archived`` (when archived, when it expires), if set.
    """
    full, summary, handler, exc_type, traceback = reason
    message = classes.build(class_name, raw_data, message_id, decode_attributes(attributes_text))
    return DeadLetter(
        message_id=message_id,
        message=message,
        reason=DeadLetterReason(
            full, summary=summary, handler=handler, exc_type=exc_type, traceback=traceback
        ),
        handler=handler,
        exc_type=exc_type,
        traceback=traceback,
        message_class=class_name,
        attributes=message.attributes,
        size=len(raw_data),
        first_dead_lettered_at=first.astimezone(UTC),
        dead_lettered_at=last.astimezone(UTC),
        times=times,
        archived_at=None if archived[0] is None else archived[0].astimezone(UTC),
        expires_at=None if archived[1] is None else archived[1].astimezone(UTC),
    )


def paged(
    fetch: Callable[[int, int], Sequence[Sequence[Any]]], limit: int | None, page_size: int
) -> Iterator[Sequence[Any]]:
    """Rows oldest first, ``page_size`` at a time, at most ``limit`` of them.

    ``fetch(after, count)`` returns up to ``count`` rows whose first column, the
    row's sequence number, is greater than ``after``, in that order.

    :raises ValueError: if ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    return _pages(fetch, limit, page_size)


def _pages(
    fetch: Callable[[int, int], Sequence[Sequence[Any]]], limit: int | None, page_size: int
) -> Iterator[Sequence[Any]]:
    last = 0
    left = -1 if limit is None else limit
    while left:
        page = page_size if left < 0 else min(left, page_size)
        rows = fetch(last, page)
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1][0]
        if left > 0:
            left -= len(rows)
