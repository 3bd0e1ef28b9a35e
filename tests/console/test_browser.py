"""The console in a real browser: Playwright driving Debian's Chromium through
``missive dlq serve``, clicking as an operator would, with scripts stored in a
payload, an attribute and a reason that must never run.

Each step's screenshot is kept in ``$MISSIVE_TEST_ARTIFACTS/console/`` (by default
the test's own temporary directory), to look at when the test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli.conftest import CLI, clean_env
from tests.console.conftest import Shop, ids
from tests.console.test_serve import free_port, stop, wait_until_up
from tests.services import CHROMIUM, require_browser

if TYPE_CHECKING:
    from playwright.sync_api import Page

#: The token the console under test takes from its environment.
TOKEN = "browser-test-token-" + "b" * 16
#: A payload that would run if a page wrote it unescaped (it is also the reason
#: the ``pages`` handler gives).
SCRIPT = "<script>window.pwned=1</script>"
#: An attribute value and, as the payload of a second letter, a reason that would
#: run if written unescaped.
IMAGE = "<img src=x onerror=window.pwned=1>"
#: The variable naming where screenshots go.
ARTIFACTS_VARIABLE = "MISSIVE_TEST_ARTIFACTS"


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where this test's screenshots go."""
    root = os.environ.get(ARTIFACTS_VARIABLE)
    folder = (Path(root) if root else tmp_path) / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def console_url(shop: Shop, tmp_path: Path) -> Iterator[str]:
    """``missive dlq serve`` over the shop's DLQ, replaying through its processor."""
    shop.fail(b"order 1", "o1")
    shop.fail(b"order 2", "o2")
    shop.fail(b"order 3", "o3")
    shop.fail(SCRIPT.encode(), "p1", note=IMAGE)
    shop.fail(IMAGE.encode(), "p2", note=SCRIPT)
    shop.fix()  # the orders handler acks from now on: their replay works
    port = free_port()
    processor = f"{shop.module.__name__}:processor"
    argv = CLI(tmp_path).command(
        "dlq", "serve", "--dlq", str(shop.dlq), "--bind", f"127.0.0.1:{port}"
    )
    env = {**clean_env(), "MISSIVE_CONSOLE_TOKEN": TOKEN}
    process = subprocess.Popen(
        [*argv, "--processor", processor, "--server", "wsgiref"],
        cwd=shop.directory,
        env=env,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url + "/")
        yield url
    finally:
        err = stop(process)
        assert TOKEN not in err


@pytest.fixture
def page() -> Iterator[Page]:
    """One headless Chromium page (Debian's browser, never a downloaded one)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 720})
            tab = context.new_page()
            tab.set_default_timeout(10_000)
            yield tab
        finally:
            browser.close()


def step(page: Page, artifacts: Path, name: str) -> None:
    """Keep a screenshot of the page, and check that no stored script ran or was
    written as an element."""
    page.screenshot(path=artifacts / f"{name}.png", full_page=True)
    assert page.evaluate("typeof window.pwned") == "undefined", name
    assert page.locator("main script").count() == 0, name
    assert page.locator("main img").count() == 0, name


def rows(page: Page) -> list[str]:
    """The ids in the list's table, top to bottom."""
    boxes = page.locator("input[name=id]")
    return [str(boxes.nth(i).get_attribute("value")) for i in range(boxes.count())]


def test_an_operator_clicks_through_and_no_stored_script_runs(
    page: Page, console_url: str, shop: Shop, artifacts: Path
) -> None:
    # Given a console opened with the address it printed
    page.goto(f"{console_url}/?token={TOKEN}")
    cookie = next(c for c in page.context.cookies() if c["name"].startswith("missive_console_"))
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert page.locator("h1").inner_text() == "Failure groups"
    orders = page.locator("tr", has_text="raised RuntimeError")
    assert orders.locator("td").nth(2).inner_text() == "3"
    step(page, artifacts, "01-groups")

    # When the operator opens the list (the cookie carries the token now)
    page.get_by_role("link", name="Dead letters").first.click()
    assert sorted(rows(page)) == ["o1", "o2", "o3", "p1", "p2"]
    step(page, artifacts, "02-list")

    # and filters it by handler
    page.fill("input[name=handler]", "orders")
    page.get_by_role("button", name="Apply").click()
    assert re.search(r"handler=orders", page.url)
    assert sorted(rows(page)) == ["o1", "o2", "o3"]
    step(page, artifacts, "03-filtered")

    # and opens the letter whose payload is a script
    page.goto(f"{console_url}/letters")
    page.get_by_role("link", name="p1", exact=True).click()
    assert page.locator("pre").last.inner_text() == SCRIPT
    assert IMAGE in page.locator("pre", has_text="note").inner_text()
    step(page, artifacts, "04-letter")

    # and replays the orders' group from the groups page
    page.get_by_role("link", name="Failure groups").first.click()
    orders.get_by_role("button", name="Replay").click()
    assert "3 handled and removed" in page.locator(".notice").inner_text()
    step(page, artifacts, "05-replayed")
    page.get_by_role("link", name="Dead letters").first.click()
    assert sorted(rows(page)) == ["p1", "p2"]

    # and purges the letter whose payload is an image
    page.get_by_role("link", name="p2", exact=True).click()
    assert page.locator("pre").last.inner_text() == IMAGE
    assert IMAGE in " ".join(page.locator("dd").all_inner_texts())  # the reason
    step(page, artifacts, "06-letter")
    page.get_by_role("button", name="Purge").click()
    assert "purged 1 dead letter(s)" in page.locator(".notice").inner_text()
    step(page, artifacts, "07-purged")

    # Then only the script's letter is left, and every page above ran no script
    assert ids(shop) == [b"p1"]
