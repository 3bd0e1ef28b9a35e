"""The public API type-checks under mypy --strict as users write it."""

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")
HERE = Path(__file__).resolve().parent / "type_check"


def run_mypy(name: str) -> tuple[str, int]:
    stdout, stderr, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", "/dev/null", str(HERE / name)]
    )
    return stdout + stderr, status


def test_typed_usage_passes_strict_mypy() -> None:
    output, status = run_mypy("typed_processor.py")
    assert status == 0, output


def test_a_handler_for_the_wrong_message_type_is_rejected() -> None:
    output, status = run_mypy("wrong_message_type.py")
    assert status == 1, output
    assert "wrong_message_type.py:10" in output
    assert "JSONMessage" in output
