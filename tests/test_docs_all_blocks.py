"""Every Python block of every page of the guide runs exactly as printed.

The blocks are collected from the pages Sphinx builds (``docs/``: not the design
records in ``docs/design/``, which ``conf.py`` leaves out of the guide, nor the output
in ``docs/_build/``; the five pages of
``tests/test_docs_pages.py`` are run there). Each block runs alone in a fresh
interpreter and folder (``tests/docs_blocks.py``), pytest for a block of tests.
A block whose ``__main__`` runs a broker's adapter until it is stopped runs in the
background against the real broker, and must still be running, then stop cleanly on
SIGTERM. The environment gets only what a page tells its reader to set (a secret, a
``DATABASE_URL``), and a PostgreSQL block works in a schema of its own.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import docs_blocks
from tests.docs_blocks import ROOT, Block, python_blocks
from tests.services import require

COVERED_ELSEWHERE = {"quickstart.rst", "routing.md", "messages.md", "hooks.md", "testing.md"}
PAGES = sorted(
    page
    for page in [*(ROOT / "docs").rglob("*.md"), *(ROOT / "docs").rglob("*.rst")]
    if not {"_build", "design"} & set(page.relative_to(ROOT / "docs").parts)
    and page.name not in COVERED_ELSEWHERE
)
BLOCKS = [block for page in PAGES for block in python_blocks(page)]
#: The adapters whose ``run()`` blocks until stopped, and the service each needs.
RUNS_FOREVER = {
    "RabbitMQAdapter(": "rabbitmq",
    "RedisPubSubAdapter(": "redis",
    "RedisStreamsAdapter(": "redis",
    "NATSAdapter(": "nats",
    "NATSJetStreamAdapter(": "nats",
    "MQTTAdapter(": "mqtt",
}
SECRETS = {"GITHUB_WEBHOOK_SECRET": "s3cret", "WEBHOOK_SECRET": "s3cret"}
SECRETS["STRIPE_WEBHOOK_SECRET"] = "whsec_s3cret"


def broker_of(block: Block) -> str | None:
    """The service a block's ``__main__`` runs an adapter on, if it runs one."""
    if "__main__" not in block.code or ".run()" not in block.code:
        return None
    return next((svc for name, svc in RUNS_FOREVER.items() if name in block.code), None)


ON_A_BROKER = [block for block in BLOCKS if broker_of(block)]
ALONE = [block for block in BLOCKS if not broker_of(block)]


@contextlib.contextmanager
def postgres_schema() -> Iterator[dict[str, str]]:
    """A schema of the test's own, first on the search path of every connection."""
    require("postgres")
    import psycopg

    url, schema = "postgresql://postgres@127.0.0.1:5432/test", f"docs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
        try:
            yield {"DATABASE_URL": url, "PGOPTIONS": f"-c search_path={schema}"}
        finally:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_guide_has_pages_and_blocks_beyond_those_covered_elsewhere() -> None:
    names = {page.name for page in PAGES}
    assert {"dlq.md", "cli.md", "wsgi.md", "redis.md", "mqtt.md"} <= names
    assert not names & COVERED_ELSEWHERE
    assert len(BLOCKS) >= 40
    assert ON_A_BROKER


@pytest.mark.parametrize("block", ALONE, ids=docs_blocks.ids(ALONE))
def test_every_python_block_runs_as_printed(block: Block, tmp_path: Path) -> None:
    # Given the block saved alone in an empty folder, and what its page says to set
    env = dict(SECRETS)
    with contextlib.ExitStack() as stack:
        if "DATABASE_URL" in block.code:
            env |= stack.enter_context(postgres_schema())
        # When it is run (pytest for a block of tests)
        done = docs_blocks.run(block, tmp_path, env=env)
    # Then it exits 0 with no traceback or warning; a block of tests ran some and passed
    docs_blocks.assert_ran_cleanly(done)
    if block.is_pytest_module:
        assert " passed" in done.stdout, done.stdout
        assert "failed" not in done.stdout, done.stdout


@contextlib.contextmanager
def broker_ready(block: Block) -> Iterator[None]:
    """What the page tells its reader to create on the broker first, removed after."""
    if "RabbitMQAdapter(" in block.code and '"sign-ins"' in block.code:
        import pika

        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        connection.channel().queue_declare("sign-ins", durable=True)
        try:
            yield
        finally:
            connection.channel().queue_delete("sign-ins")
            connection.close()
    elif "NATSJetStreamAdapter(" in block.code:
        import asyncio

        import nats

        async def stream(create: bool) -> None:
            client = await nats.connect("nats://127.0.0.1:4222")
            if create:
                await client.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
            else:
                await client.jetstream().delete_stream("ORDERS")
            await client.close()

        asyncio.run(stream(create=True))
        try:
            yield
        finally:
            asyncio.run(stream(create=False))
    elif "RedisStreamsAdapter(" in block.code:
        import redis

        try:
            yield
        finally:  # the group the example made; the stream too if it holds nothing
            with redis.Redis() as client:
                with contextlib.suppress(redis.ResponseError):
                    client.xgroup_destroy("orders", "billing")
                if client.exists("orders") and not client.xlen("orders"):
                    client.delete("orders")
    elif "MQTTAdapter(" in block.code:
        from tests.conformance.mqtt_harness import connected, stop

        try:
            yield
        finally:  # the session the broker keeps for the example's stable client id
            stop(connected("thermostat-1", clean_start=True))
    else:
        yield


@pytest.mark.parametrize("block", ON_A_BROKER, ids=docs_blocks.ids(ON_A_BROKER))
def test_every_adapter_block_runs_on_its_broker_until_stopped(block: Block, tmp_path: Path) -> None:
    service = broker_of(block)
    assert service is not None
    require(service)
    with broker_ready(block):
        # Given the block running as a script, as printed, on the local broker
        process = docs_blocks.start_script(block, tmp_path)
        try:
            # When it has had time to connect, it is still running
            time.sleep(2)
            assert process.poll() is None, (tmp_path / "err").read_text()
        finally:
            # Then SIGTERM stops it gracefully
            process.terminate()
            status = process.wait(timeout=30)
    err = (tmp_path / "err").read_text()
    assert status == 0, err
    for sign in ("Traceback", "Warning:", "Exception ignored"):
        assert sign not in err, err
