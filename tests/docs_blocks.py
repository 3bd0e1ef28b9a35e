"""The Python blocks of a user-guide page, and running each one as a reader would.

A reader copies one block into a file and runs it: so does :func:`run_script`, in a
fresh interpreter and a folder of the test's own (``tmp_path``), with warnings as
errors as in the rest of the suite. Nothing is filled in: a block that needs an import
or a handler it does not print fails here. A block that holds pytest tests
(``def test_...``) is run by pytest instead (:func:`run_pytest`), so its asserts count.

Markdown pages give their fenced ```` ```python ```` blocks; reStructuredText pages
their ``.. code-block:: python`` (or ``.. code:: python``) directives.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_MARKDOWN = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The directive, any options (``:caption: ...``), a blank line, then the indented body.
_RST = re.compile(
    r"^\.\. code(?:-block)?:: python\n(?:[ \t]*:.*\n)*\n((?:(?:[ \t]+.*)?\n)+)", re.MULTILINE
)


@dataclass(frozen=True)
class Block:
    """One Python block of a page: its code, as printed, and where it starts."""

    page: str
    line: int
    code: str

    @property
    def is_pytest_module(self) -> bool:
        """Whether the block is a test module (``test_`` functions or ``Test`` classes)."""
        found = re.search(r"^(?:(?:async )?def test_|class Test)", self.code, re.MULTILINE)
        return found is not None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The Python blocks of ``page`` (``.md`` or ``.rst``), in order."""
    text = page.read_text("utf-8")
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    blocks = []
    if page.suffix == ".md":
        for match in _MARKDOWN.finditer(text):
            line = text.count("\n", 0, match.start(1)) + 1
            blocks.append(Block(name, line, match.group(1)))
    elif page.suffix == ".rst":
        for match in _RST.finditer(text):
            body = match.group(1).rstrip("\n").split("\n")
            indent = min(len(ln) - len(ln.lstrip()) for ln in body if ln.strip())
            code = "\n".join(ln[indent:] for ln in body) + "\n"
            line = text.count("\n", 0, match.start(1)) + 1
            blocks.append(Block(name, line, code))
    else:
        raise ValueError(f"not a Markdown or reStructuredText page: {page}")
    return blocks


def ids(blocks: list[Block]) -> list[str]:
    """Test ids naming each block by its page and line."""
    return [str(block) for block in blocks]


def _environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})  # what the page tells its reader to set (a secret, a URL)
    # The source tree's missive, whatever the folder the block runs in.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # what a block prints is in the output as it happens
    return env


def python(
    args: list[str],
    cwd: Path,
    *,
    stdin: bytes = b"",
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -W error ARGS`` in ``cwd`` with ``stdin`` piped in, and ``env``
    added to the environment; text output."""
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        input=stdin.decode("utf-8"),
        cwd=cwd,
        env=_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def save(block: Block, cwd: Path, name: str = "example.py") -> Path:
    """Write ``block`` to ``cwd/name``, as a reader saves it."""
    path = cwd / name
    path.write_text(block.code, "utf-8")
    return path


def run_script(
    block: Block,
    cwd: Path,
    *,
    stdin: bytes = b"",
    name: str = "example.py",
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Save ``block`` as ``cwd/name`` and run it as ``python name`` (so as ``__main__``)."""
    save(block, cwd, name)
    return python([name], cwd, stdin=stdin, timeout=timeout, env=env)


def start_script(
    block: Block, cwd: Path, name: str = "example.py", *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Save ``block`` and start it in the background, its output in ``cwd/out`` and
    ``cwd/err``: for a block that runs until it is stopped (a broker's adapter)."""
    save(block, cwd, name)
    with (cwd / "out").open("wb") as out, (cwd / "err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-W", "error", name],
            cwd=cwd,
            env=_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


def run_pytest(
    block: Block, cwd: Path, timeout: float = 120, *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Save ``block`` as ``cwd/test_example.py`` and run pytest on it, strictly."""
    save(block, cwd, "test_example.py")
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", "test_example.py"]
    return python(args, cwd, timeout=timeout, env=env)


def run(
    block: Block, cwd: Path, *, stdin: bytes = b"", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``block`` the way it is meant: pytest for a test module, else a script;
    ``env`` is added to the environment, as the page tells its reader to set it."""
    if block.is_pytest_module:
        return run_pytest(block, cwd, env=env)
    return run_script(block, cwd, stdin=stdin, env=env)


def assert_ran_cleanly(done: subprocess.CompletedProcess[str]) -> None:
    """The block exited 0 and wrote no traceback, warning or ignored exception."""
    report = f"exit status {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    for sign in ("Traceback", "Warning:", "Exception ignored"):
        assert sign not in done.stderr, report
