"""Random values for every option that takes one: a documented status, never a traceback.

Each example runs ``main()`` in this process with one option given a random value
(text, numbers huge and negative, digits of other scripts, times far away or in odd
zones, malformed URLs and connection strings) and the rest of the command line
valid, against a real SQLite DLQ. The closed-stdout cases run real processes, in
``test_output.py``.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.cli import main, parser
from missive.testing.conformance.dlq_suite import failure
from tests.cli._apps import SHOP, write_app
from tests.cli.test_dlq_inspect import fill, order

#: The exit statuses docs/cli.md documents for the dlq and routes commands.
DOCUMENTED = {0, 1, 2}
# routes check's closing summary: status 1 there is a result (a gap), not an error.
_ROUTES_SUMMARY = re.compile(r"\d+ message\(s\): ")

_zones = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                       max_value=timedelta(hours=23, minutes=59)).map(timezone)  # fmt: skip
_times = st.one_of(
    st.datetimes(timezones=st.just(UTC) | _zones).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),
    st.builds("{}{}".format, st.integers(min_value=0, max_value=10**30), st.sampled_from("smhdw")),
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "99999999999d",
                     "\u00b2d", "\u0663h", "\uff11w", "1e9s", "-1d", "1.5h", "2026-02-30"]),
)  # fmt: skip
_numbers = st.one_of(
    st.integers().map(str),
    st.integers(min_value=10**18, max_value=10**400).map(str),
    st.floats().map(str),
    st.sampled_from(["\u00b2", "\u0663", "\uff13", "1_000", " 7 ", "0x10", "-0", "", "9" * 5000]),
)
_locations = st.one_of(
    st.sampled_from([
        "postgresql://root:hunter2@[::1/test", "postgresql://root:hunter2@[zz]:1/test",
        "postgresql://root:hunter2@127.0.0.1:99999/test", "postgresql://:@/", "sqlite://[::1",
        "sqlite:///", "sqlite://host/dlq.db", "mysql://u:hunter2@h/x", "://", "file:///etc",
        "host=127.0.0.1 port=1 dbname=test password=hunter2", "password='hunter2",
        "host=127.0.0.1 port=abc password=hunter2", "x=1.db", ".", "/", "dlq.db\x00",
    ]),
    st.builds("postgresql://u:hunter2@127.0.0.1:1/{}".format, st.text()),
)  # fmt: skip
_import_paths = st.one_of(
    st.sampled_from([":", "shop:", ":processor", "shop:processor.x", "..:x", "shop:HERE",
                     "no_such_module_x:y", "missive:Processor", "shop:order\x00s"]),
)  # fmt: skip
_anything = st.one_of(st.text(), st.text(alphabet=st.characters(codec="utf-8")), _numbers)

#: For each command: a valid command line, and each option's strategy.
COMMANDS: dict[str, tuple[list[str], dict[str, st.SearchStrategy[str]]]] = {
    "dlq ls": (["dlq", "ls", "--dlq", "dlq.db"], {
        "--limit": _numbers, "--since": _times, "--before": _times, "--reason": _anything,
        "--handler": _anything, "--dlq": _locations, "--dlq-table": _anything,
    }),
    "dlq --dlq ls": (["dlq", "--dlq", "dlq.db", "ls"], {"--dlq": _locations}),
    "dlq show": (["dlq", "show", "order-1", "--dlq", "dlq.db"], {
        "--dlq": _locations, "--dlq-table": _anything,
    }),
    "dlq rm": (["dlq", "rm", "none", "--dlq", "dlq.db"], {"--dlq": _locations}),
    "dlq purge": (["dlq", "purge", "--yes", "--reason", "no such reason", "--dlq", "dlq.db"], {
        "--since": _times, "--before": _times, "--handler": _anything, "--dlq": _locations,
    }),
    "dlq export": (["dlq", "export", "--dlq", "dlq.db"], {
        "--since": _times, "--before": _times, "--reason": _anything, "--dlq": _locations,
    }),
    "dlq stats": (["dlq", "stats", "--dlq", "dlq.db"], {
        "--dlq": _locations, "--dlq-table": _anything,
    }),
    "dlq replay": (["dlq", "replay", "--dry-run", "--all", "--processor", "shop:processor",
                    "--dlq", "dlq.db"], {
        "--processor": _import_paths | _anything, "--message-class": _import_paths | _anything,
        "--dlq": _locations,
    }),
    "routes check": (["routes", "check", "shop:processor", "samples.jsonl"], {
        "--message-class": _import_paths | _anything, "--dlq-table": _anything,
    }),
}  # fmt: skip
OPTIONS = [(name, option) for name, (_, options) in COMMANDS.items() for option in options]
IDS = [f"{name} {option}" for name, option in OPTIONS]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the shop application, a DLQ with dead letters and sample lines."""
    path = tmp_path_factory.mktemp("fuzz")
    write_app(path, "shop", SHOP)
    fill(path / "dlq.db", (order(1), failure("bad", "orders")), (order(2), "no handler matched"))
    (path / "samples.jsonl").write_text('{"kind":"order","n":1}\nnot json\n')
    return path


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``workdir``, with Missive's variables unset and sys.path restored after."""
    monkeypatch.chdir(workdir)
    for name in ("MISSIVE_DLQ", "MISSIVE_DLQ_TABLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    return workdir


def run(argv: list[str]) -> tuple[int, str]:
    """``main(argv)`` in this process: its status and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    return status, stderr.getvalue()


def assert_reported(status: int, stderr: str) -> None:
    """A documented status, and a failure said in ``missive: error:`` lines, no traceback."""
    assert "Traceback" not in stderr
    assert status in DOCUMENTED, stderr
    lines = stderr.splitlines()
    if status == 2:
        assert len(lines) == 1, stderr
        assert lines[0].startswith("missive: error: "), stderr
    elif status == 1:
        assert lines, "status 1 without a word"
        said = lines[0].startswith(("missive: error: ", "missive: warning: "))
        assert said or _ROUTES_SUMMARY.match(lines[-1]), stderr


@pytest.mark.parametrize(("command", "option"), OPTIONS, ids=IDS)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_a_random_value_for_an_option_gives_a_documented_status_and_one_error_line(
    in_workdir: Path, command: str, option: str, data: st.DataObject
) -> None:
    # Given a valid command line with one option given a random value
    argv, options = COMMANDS[command]
    value = data.draw(options[option], label=option)
    if option in argv:
        argv = list(argv)
        argv[argv.index(option) + 1] = value
    else:
        argv = [*argv, f"{option}={value}"]

    # When the command runs, then it ends with a documented status, the error said once
    status, stderr = run(argv)

    assert_reported(status, stderr)
    assert "hunter2" not in stderr


@settings(max_examples=200, deadline=None)
@given(option=st.sampled_from(["--workers", "--graceful-timeout", "--log-level"]),
       value=_anything)  # fmt: skip
def test_a_random_value_for_a_run_option_is_read_or_refused_on_one_line(
    option: str, value: str
) -> None:
    # Given missive run with one option given a random value
    # When its command line is read (running it would start workers)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            parser().parse_args(["run", "app:adapter", f"{option}={value}"])
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1

    # Then it is taken, or refused with status 2 on one line
    assert status in (0, 2)
    assert_reported(status, stderr.getvalue())
