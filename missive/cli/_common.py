"""What the commands share: import paths, opening a DLQ, message ids, times."""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from missive.adapters.base import Adapter
from missive.dlq import DeadLetterStore, open_dlq
from missive.dlq._location import passwords, redacted, sqlite_path
from missive.message import Message
from missive.processor import Processor

__all__ = [
    "CLIError",
    "format_id",
    "import_object",
    "load_processor",
    "open_store",
    "parse_id",
    "parse_time",
    "redact",
]

#: The environment variable that names the DLQ when ``--dlq`` is not given.
DLQ_VARIABLE = "MISSIVE_DLQ"
#: The environment variable that names a PostgreSQL DLQ's table without ``--dlq-table``.
TABLE_VARIABLE = "MISSIVE_DLQ_TABLE"


class CLIError(Exception):
    """A failure to report as one line, ``missive: error: ...``, with exit status 1."""


def import_object(path: str, what: str = "object") -> object:
    """The object at ``module:attribute`` (the attribute may be dotted).

    The working directory is put on ``sys.path`` first, as gunicorn does, so that
    ``missive run app:adapter`` finds ``./app.py``.

    :raises CLIError: saying what is wrong with ``path``.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise CLIError(
            f"cannot import {path!r}: write the {what} as module:attribute, "
            "for example myapp.workers:processor"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise CLIError(
                f"cannot import {path!r}: no module named {exc.name!r} "
                "(check the module is on PYTHONPATH)"
            ) from None
        raise CLIError(_raised_on_import(path, exc)) from None
    except SystemExit as exc:
        raise CLIError(
            f"cannot import {path!r}: importing it called sys.exit({exc.code!r}); "
            "a module to import must not exit (guard it with if __name__ == '__main__':)"
        ) from None
    except Exception as exc:
        raise CLIError(_raised_on_import(path, exc)) from None
    found: object = module
    for number, part in enumerate(attribute.split(".")):
        try:
            found = getattr(found, part)
        except AttributeError:
            where = ".".join([module_name, *attribute.split(".")[:number]])
            raise CLIError(
                f"cannot import {path!r}: {where!r} has no attribute {part!r} "
                "(check the name, and that the module is on PYTHONPATH)"
            ) from None
    return found


def _raised_on_import(path: str, exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename]
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" at {exc.filename}:{exc.lineno}"
    else:
        where = f" at {user[-1].filename}:{user[-1].lineno}" if user else ""
    module = path.partition(":")[0]
    return (
        f"cannot import {path!r}: importing it raised {type(exc).__name__}: {exc}{where} "
        f"(run python -c 'import {module}' to see the traceback)"
    )


def load_processor(path: str) -> tuple[Processor[Message], type[Message] | None]:
    """The processor at ``path`` and, if ``path`` names an adapter, its message class.

    ``path`` may name a :class:`~missive.Processor`, an :class:`~missive.Adapter`
    (its processor is used), or a function returning either.

    :raises CLIError: if it does not import or is neither.
    """
    found = import_object(path, "processor")
    if not isinstance(found, Processor | Adapter) and callable(found):
        try:
            found = found()
        except Exception as exc:
            raise CLIError(f"{path!r} raised {type(exc).__name__}: {exc} when called") from None
    if isinstance(found, Adapter):
        return found.processor, found.message_cls
    if isinstance(found, Processor):
        return found, None
    raise CLIError(
        f"{path!r} is {type(found).__name__} {safe_repr(found)}, not a missive.Processor, "
        "an Adapter, or a function returning one"
    )


def safe_repr(value: object, limit: int = 60) -> str:
    """A short ``repr``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redact(location: str) -> str:
    """``location`` as the command shows it: any password replaced by ``***``."""
    return redacted(location)


def open_store(
    location: str | None, table: str | None = None, *, read_only: bool = False
) -> DeadLetterStore:
    """Open the existing DLQ at ``location`` (else ``$MISSIVE_DLQ``).

    An SQLite file that does not exist is an error, never silently created.
    ``table`` (else ``$MISSIVE_DLQ_TABLE``) is a PostgreSQL DLQ's table. Commands
    that only look pass ``read_only``: the store then changes nothing, not even an
    SQLite file's journal mode.

    :raises CLIError: if none is given, it does not exist, or it cannot be opened.
    """
    if not location:
        location = os.environ.get(DLQ_VARIABLE, "")
    if not location:
        raise CLIError(f"no DLQ given: pass --dlq PATH_OR_URL or set {DLQ_VARIABLE}")
    shown = redact(location)
    path = sqlite_path(location)
    if path and not Path(path).is_file():
        problem = "is a directory" if Path(path).is_dir() else "does not exist"
        raise CLIError(f"cannot open the DLQ {shown!r}: {path!r} {problem}")
    options: dict[str, Any] = {"read_only": read_only}
    if path is not None and table:
        raise CLIError("--dlq-table is for PostgreSQL DLQs; an SQLite DLQ has one table")
    table = table or os.environ.get(TABLE_VARIABLE)
    if path is None and table:
        options["table"] = table
    try:
        return open_dlq(location, create=False, **options)
    except Exception as exc:
        # Driver errors may quote the URL: never show its password.
        text = str(exc).strip().splitlines()
        detail = redact_text(text[0] if text else type(exc).__name__, location)
        # open_dlq's own errors name the location too.
        detail = detail.removeprefix(f"cannot open DLQ {shown!r}: ")
        raise CLIError(f"cannot open the DLQ {shown!r}: {detail}") from None


def redact_text(text: str, location: str) -> str:
    """``text`` with ``location``, and each password written in it, hidden.

    A password is hidden where it stands as a word of its own, so that a short
    one does not mangle the words around it.
    """
    text = text.replace(location, redacted(location))
    for password in passwords(location):
        word = rf"(?<![^\W_]){re.escape(password)}(?![^\W_])"
        text = re.sub(word, "***", text)
    return text


def format_id(message_id: bytes) -> str:
    """A message id as typed on the command line: its text, or ``hex:...`` if it has none.

    Ids that are printable UTF-8 without spaces, and do not start with ``hex:``,
    are shown as they are; any other id as ``hex:`` and its bytes in hex.
    """
    try:
        text = message_id.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and text.isprintable() and " " not in text and not text.startswith("hex:"):
        return text
    return "hex:" + message_id.hex()


def parse_id(text: str) -> bytes:
    """The message id that :func:`format_id` wrote as ``text``.

    :raises CLIError: if a ``hex:`` id is not hex.
    """
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise CLIError(f"id {text!r} is not hex after 'hex:'") from None
    return text.encode("utf-8")


_RELATIVE = re.compile(r"([0-9]+)\s*([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FORMS = "give ISO-8601 (2026-11-28T10:00:00Z) or a duration ago (30m, 1h, 2d)"


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime from ISO-8601 (UTC if no zone) or a duration ago (``90m``, ``2d``).

    Durations are a number in ASCII digits and a unit: ``s``, ``m`` (minutes), ``h``,
    ``d`` or ``w``. The time must fall between the years 1 and 9999 in UTC.

    :raises CLIError: if ``text`` is neither, or names a time outside that range.
    """
    match = _RELATIVE.fullmatch(text.strip())
    try:
        if match:
            delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
            return (now or datetime.now(UTC)) - delta
        moment = datetime.fromisoformat(text.strip())
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise CLIError(
            f"cannot read the time {safe_repr(text)}: it is outside the years 1 to 9999 "
            "in UTC; give a time within them"
        ) from None
    except ValueError:
        # Also a number too long to convert (over 4300 digits).
        raise CLIError(f"cannot read the time {safe_repr(text)}: {_FORMS}") from None
