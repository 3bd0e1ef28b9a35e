"""Every code example of the user's specification, run with the fills it needs.

The specification is kept verbatim in ``tests/fixtures/spec_quickstart.rst`` (never
edit it); the user guide's quickstart (docs/quickstart.rst) is our own page, whose
examples run as printed in tests/test_docs_pages.py.

Where the spec leaves a placeholder (``...`` as a matcher, an import it omits, a path
on the user's machine) the test fills it in with ``fill``, which names what it replaces;
each fill must apply, so a change to the spec fails here rather than going untested.
"""

import json
import re
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import missive

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "fixtures" / "spec_quickstart.rst"
SHARED_SPEC = ROOT.parent / "shared" / "spec" / "quickstart.rst"


def python_blocks(text: str) -> list[str]:
    blocks = []
    pattern = re.compile(r"^\.\. code(?:-block)?:: python\n\n((?:(?:    .*)?\n)+)", re.MULTILINE)
    for match in pattern.finditer(text):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[4:] for line in lines).strip() + "\n")
    return blocks


BLOCKS = python_blocks(SPEC.read_text())


def fill(block: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert old in block, f"the spec no longer contains {old!r}: update this test"
        block = block.replace(old, new)
    return block


def test_the_fixture_is_the_users_spec_verbatim() -> None:
    if not SHARED_SPEC.exists():
        pytest.skip(f"{SHARED_SPEC} is not present beside this checkout")
    assert SPEC.read_text() == SHARED_SPEC.read_text()


def test_the_spec_has_the_examples_this_test_knows() -> None:
    assert len(BLOCKS) == 8


def test_hello_example_is_shipped_verbatim() -> None:
    assert (ROOT / "examples" / "hello_processor.py").read_text() == BLOCKS[0]


def test_hello_example_routes_hello(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "hello_processor"}
    exec(BLOCKS[0], namespace)
    client = namespace["processor"].test_client()
    message = missive.RawMessage(b"Hello")
    client.send(message)
    assert capsys.readouterr().out == "Hello whoever you are\n"
    assert client.acked == [message]


def matchers_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {"missive": missive}
    exec(BLOCKS[1], namespace)
    exec(
        fill(BLOCKS[2], ("@processor.handle_for(...)", "@processor.handle_for(lambda m: False)")),
        namespace,
    )
    return namespace


def test_matcher_example_dead_letters_because_the_spec_matcher_raises() -> None:
    # As printed, HasLabelMatcher.__call__ reads `label`, not `self.label`: a NameError
    # in a matcher must dead-letter the message, not crash the worker.
    namespace = matchers_namespace()
    processor = namespace["processor"]
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    message = missive.JSONMessage(json.dumps({"label": "sign-in"}).encode())
    assert processor.test_client().send(message) is missive.Outcome.DEAD_LETTERED
    assert "NameError" in dlq[message.message_id][1]


def test_matcher_example_routes_once_the_matcher_is_fixed() -> None:
    namespace = matchers_namespace()
    namespace["label"] = "sign-in"  # what the spec's matcher meant by `label`
    processor = namespace["processor"]
    processor.set_dlq({})
    message = missive.JSONMessage(json.dumps({"label": "sign-in"}).encode())
    # record_sign_ins is `...` in the spec: it settles nothing, so it is dead-lettered
    # with a reason naming it; the routing itself chose it.
    processor.test_client().send(message)
    assert "record_sign_ins" in processor.dlq[message.message_id][1]


def test_typed_processor_example() -> None:
    namespace: dict[str, Any] = {"missive": missive}
    exec(BLOCKS[3], namespace)
    assert isinstance(namespace["json_processor"], missive.Processor)


def test_hooks_example_records_the_time_taken(caplog: pytest.LogCaptureFixture) -> None:
    # The spec uses datetime without importing it: the import is filled in.
    namespace: dict[str, Any] = {"missive": missive, "datetime": datetime, "__name__": "hooks"}
    block = fill(
        BLOCKS[4],
        (
            "@proc.handle_for(...)\ndef some_handler(message, ctx):\n    ...",
            "@proc.handle_for(lambda m: True)\ndef some_handler(message, ctx):\n    ctx.ack()",
        ),
    )
    caplog.set_level("DEBUG", logger="hooks")
    exec(block, namespace)
    with warnings.catch_warnings():
        # datetime.utcnow(), as the spec uses it, is deprecated from Python 3.12.
        warnings.simplefilter("ignore", DeprecationWarning)
        namespace["proc"].test_client().send(missive.RawMessage(b"x"))
    assert any(record.getMessage().startswith("took ") for record in caplog.records)


def test_testing_example_with_a_handler_for_cal() -> None:
    namespace: dict[str, Any] = {"missive": missive}
    exec(BLOCKS[3], namespace)

    @namespace["json_processor"].handle_for(lambda m: m.get_json().get("name") == "Cal")
    def greet_cal(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()

    exec(BLOCKS[6], namespace)
    assert namespace["message"] in namespace["test_client"].acked


def test_dlq_example_stores_failed_messages(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"missive": missive}
    exec(BLOCKS[3], namespace)
    path = tmp_path / "dlq.db"
    exec(fill(BLOCKS[7], ('"/var/dlq.db"', repr(str(path)))), namespace)
    processor = namespace["json_processor"]
    message = missive.JSONMessage(b"not json")
    assert processor.test_client().send(message) is missive.Outcome.DEAD_LETTERED
    stored, reason = processor.dlq[message.message_id]
    assert stored == message
    assert stored.raw_data == b"not json"
    assert reason == "no handler matched the message"
    processor.dlq.close()
