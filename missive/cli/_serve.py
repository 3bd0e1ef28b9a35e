"""``missive dlq serve``: the web console of a DLQ.

Serves :class:`missive.console.Console` on --bind (127.0.0.1:8080): the failure
groups, the list of dead letters with filters, each dead letter, and the actions
replay (in process with --processor, to the broker with --broker-url), archive and
purge, each recorded in the audit table (missive dlq history).

Every request needs the console's token. It is made at start and printed once on
stderr, in the address to open (http://127.0.0.1:8080/?token=...), unless
MISSIVE_CONSOLE_TOKEN gives it (at least 16 letters, digits, '-', '_', '.' or '~').
The first page opened with ?token= sets a cookie (HttpOnly, SameSite=Strict) that
carries it from then on; scripts may send "Authorization: Bearer TOKEN".

The token is the only protection: anyone who has it and can reach the console can
replay and purge. It binds to loopback by default and then answers only requests
addressed to a loopback name; binding elsewhere prints a warning, as the token then
crosses the network in clear. Reach it through an SSH tunnel, or put it behind a
TLS proxy, rather than binding it to a public address.

It runs under gunicorn when gunicorn is installed (one worker, four threads), else
under the standard library's wsgiref server (--server chooses). SIGTERM or Ctrl-C
stops it (exit status 0).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
import os
import signal
import socket
import socketserver
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from missive._ops_server import parse_address
from missive.cli._common import DLQ_VARIABLE, CLIError, load_processor, open_store, redact
from missive.cli._filters import add_dlq_option
from missive.cli._output import Output
from missive.cli._run_ops import configure_logging

if TYPE_CHECKING:  # missive.console imports the CLI's modules: imported when run
    from missive.console import Console, Replayer

__all__ = ["DEFAULT_BIND", "add_parser", "is_loopback"]

#: Where the console listens unless --bind says otherwise.
DEFAULT_BIND = "127.0.0.1:8080"
#: Threads of the gunicorn worker: a long replay leaves the pages answering.
THREADS = 4
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_log = logging.getLogger("missive.console")


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` under ``missive dlq``."""
    serve = sub.add_parser(
        "serve",
        help="a web console: groups, list, show, replay, archive, purge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dlq_option(serve)
    serve.add_argument(
        "--bind",
        type=_address,
        default=DEFAULT_BIND,
        metavar="HOST:PORT",
        help=f"where to listen (default {DEFAULT_BIND}; see the token above)",
    )
    serve.add_argument(
        "--processor",
        metavar="MODULE:PROCESSOR",
        help="a processor or adapter: the console's replay runs in this process through it",
    )
    serve.add_argument(
        "--broker-url",
        metavar="URL",
        help="amqp://, redis://...: the console's replay publishes back to this broker",
    )
    serve.add_argument(
        "--server",
        choices=("auto", "gunicorn", "wsgiref"),
        default="auto",
        help="the WSGI server (default auto: gunicorn if installed, else wsgiref)",
    )
    serve.set_defaults(func=_serve)


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _replayer(args: argparse.Namespace) -> Replayer:
    from missive.console import Replayer

    if args.processor and args.broker_url:
        raise CLIError("give --processor (replay in process) or --broker-url, not both")
    if args.processor:
        processor, message_class = load_processor(args.processor)
        return Replayer(processor, message_class)
    if args.broker_url:
        from missive.cli._republish import broker_url

        url, _ = broker_url(argparse.Namespace(broker_url=args.broker_url))
        return Replayer(broker_url=url)
    return Replayer()


def _serve(args: argparse.Namespace, out: Output) -> int:
    from missive.console import Console
    from missive.console.access import new_token, token_from

    location = args.dlq or os.environ.get(DLQ_VARIABLE, "")
    open_store(location, args.dlq_table, read_only=True).close()  # fail now, not per page
    replayer = _replayer(args)
    host, port = args.bind
    loopback = is_loopback(host)
    hosts = {*_LOOPBACK_NAMES, host} if loopback else None
    try:
        given = token_from(os.environ)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    token = new_token() if given is None else given
    console = Console(location, args.dlq_table, replayer=replayer, hosts=hosts, token=token)
    if not loopback:
        out.warn(
            f"the console listens on {host}, not loopback: its token crosses the network "
            "in clear, and anyone who has it can replay and purge dead letters"
        )
    server = args.server
    if server == "auto":
        server = "gunicorn" if importlib.util.find_spec("gunicorn") else "wsgiref"
    configure_logging("INFO", "text")
    shown = f"[{host}]" if ":" in host else host
    what = "replay off" if not replayer.available else "replay on"
    if server == "gunicorn":
        _check_free(host, port)
        _log.info(
            "console of %s on http://%s:%d/ (%s), served by gunicorn",
            redact(location),
            shown,
            port,
            what,
        )
        _show_address(out, f"http://{shown}:{port}/", given is None, token)
        _gunicorn(console, f"{shown}:{port}")
        return 0
    with _listening(host, port, console) as httpd:
        _log.info(
            "console of %s on http://%s:%d/ (%s), served by wsgiref (standard library)",
            redact(location),
            shown,
            httpd.server_port,
            what,
        )
        _show_address(out, f"http://{shown}:{httpd.server_port}/", given is None, token)
        with _stopped_by_sigterm(), suppress(_StoppedError, KeyboardInterrupt):
            httpd.serve_forever()
    return 0


def _show_address(out: Output, url: str, made: bool, token: str) -> None:
    """Print, once, the address to open: with the token if it was made here."""
    from missive.console.access import TOKEN_VARIABLE

    if made:
        out.note(f"open {url}?token={token}")
    else:
        out.note(f"open {url}?token=TOKEN, TOKEN being the value of {TOKEN_VARIABLE}")


class _StoppedError(BaseException):
    """Raised in the serving loop by SIGTERM. Not an ``Exception``, as
    ``KeyboardInterrupt`` is not: socketserver reports and swallows an ``Exception``
    raised while it starts a request's thread, and would serve on."""


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _StoppedError

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Quiet(WSGIRequestHandler):
    """wsgiref's handler, its request lines logged at DEBUG instead of printed."""

    def log_message(self, format: str, *args: Any) -> None:
        from missive.console.access import redact_token

        _log.debug("%s %s", self.address_string(), redact_token(format % args))


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


@contextmanager
def _listening(host: str, port: int, console: Console) -> Iterator[_Server]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("_Server", (_Server,), {"address_family": family})
    try:
        httpd: _Server = server_class((host, port), _Quiet)
    except OSError as exc:
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    httpd.set_app(console)
    try:
        yield httpd
    finally:
        httpd.server_close()


def _check_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _gunicorn(console: Console, bind: str) -> None:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    class Application(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": bind,
                "workers": 1,
                "threads": THREADS,
                "loglevel": "warning",
                "accesslog": None,
                "proc_name": "missive-console",
            }
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> Console:
            return console

    Application().run()
