"""The ``missive`` command: run adapters, look after DLQs, check routing.

::

    missive run myapp:adapter --workers 4
    missive dlq ls --dlq dlq.db
    missive dlq replay --dlq dlq.db --processor myapp:processor --all
    missive routes check myapp:processor samples.jsonl

Also ``python -m missive``. See ``docs/cli.md``. Exit status: 0 on success, 1 on
failure, 2 for a command line that cannot be read, 130 when interrupted; errors go
to stderr as one line, ``missive: error: ...``, never as a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from missive.cli import _archive, _audit, _dlq, _edit, _groups, _legacy, _replay, _routes, _run
from missive.cli._common import CLIError
from missive.cli._output import Output, open_standard_streams
from missive.cli._serve import add_parser as add_serve_parser
from missive.errors import MissiveError

__all__ = ["main", "parser"]


#: The exit status for a command line that cannot be read.
USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser, and so each of its subcommands', that reports a bad
    command line on one line, ``missive: error: ...``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        Output().error(f"{message} (see {self.prog} --help)")
        raise SystemExit(USAGE_ERROR)


def parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    from missive import __version__

    top = _Parser(
        prog="missive",
        description="Run Missive adapters, inspect and replay dead letters, check routing.",
    )
    top.add_argument("--version", action="version", version=f"missive {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _run.add_parser(sub)
    dlq = sub.add_parser("dlq", help="look at, replay and tidy up dead letters")
    _dlq.add_dlq_option(dlq, default=None)
    dlq_sub = _dlq.add_parsers(dlq)
    _replay.add_parser(dlq_sub)
    _groups.add_parser(dlq_sub)
    _legacy.add_parser(dlq_sub)
    _archive.add_parser(dlq_sub)
    _edit.add_parser(dlq_sub)
    add_serve_parser(dlq_sub)
    _audit.add_parser(dlq_sub)  # last: it also records each run of rm, purge and replay
    _routes.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``missive`` command with ``argv`` (``sys.argv[1:]`` by default).

    A closed stdout, or one whose reader goes away, does not stop the work: what
    would go there is dropped.

    :returns: the exit status.
    """
    open_standard_streams()
    out = Output()
    try:
        args = parser().parse_args(argv)
        status: int = args.func(args, out)
    except CLIError as exc:
        out.error(str(exc))
        return 1
    except MissiveError as exc:
        out.error(str(exc).splitlines()[0])
        return 1
    except KeyboardInterrupt:
        out.note("interrupted")
        return 130
    except BrokenPipeError:
        # A command's own write to stdout (show --raw) found the reader gone.
        out.reader_gone()
        return 0
    finally:
        out.flush()
    return status
