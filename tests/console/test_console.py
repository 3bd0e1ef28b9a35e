"""The console's WSGI application, called directly, over a real SQLite DLQ filled by a
processor whose handlers fail: pages, escaping, the CSRF check and the actions."""

from __future__ import annotations

import re

import pytest

from missive.console import app
from missive.dlq.groups import fingerprint
from missive.dlq.sqlite import SQLiteDLQ
from tests.console.conftest import Shop, call, console_of, history, ids


def test_groups_page_counts_each_failure_and_links_to_its_list(filled: Shop) -> None:
    with SQLiteDLQ(filled.dlq) as dlq:
        group = fingerprint(dlq.record(b"o1"))

    response = call(console_of(filled), "/")

    assert response.status == 200
    link = rf'<tr><td><a href="/letters\?group={group}">{group}</a>.*?</tr>'
    row = re.search(link, response.body)
    assert row is not None
    assert "<td>2</td>" in row.group()
    assert "orders" in row.group()
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_list_filters_by_handler_reason_and_group(filled: Shop) -> None:
    console = console_of(filled)
    with SQLiteDLQ(filled.dlq) as dlq:
        group = fingerprint(dlq.record(b"p<1>"))

    by_handler = call(console, "/letters", {"handler": "orders"}).body
    by_reason = call(console, "/letters", {"reason": "broken"}).body
    by_group = call(console, "/letters", {"group": group}).body

    assert 'value="o1"' in by_handler
    assert 'value="p&lt;1&gt;"' not in by_handler
    assert 'value="o2"' in by_reason
    assert 'value="p&lt;1&gt;"' not in by_reason
    assert 'value="p&lt;1&gt;"' in by_group
    assert 'value="o1"' not in by_group


def test_list_pages_through_the_letters(filled: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "PAGE_SIZE", 2)
    console = console_of(filled)

    first = call(console, "/letters").body
    second = call(console, "/letters", {"page": "2"}).body

    assert 'value="o1"' in first
    assert 'value="o2"' in first
    assert "page=2" in first
    assert 'value="p&lt;1&gt;"' in second
    assert 'value="o1"' not in second
    assert "page=1" in second
    assert "page=3" not in second


def test_list_shows_archived_letters_only_when_asked(filled: Shop) -> None:
    with SQLiteDLQ(filled.dlq) as dlq:
        dlq.archive([b"o1"], dlq.record(b"o1").dead_lettered_at.replace(year=2999))
    console = console_of(filled)

    assert 'value="o1"' not in call(console, "/letters").body
    archived = call(console, "/letters", {"archived": "1"}).body
    assert 'value="o1"' in archived
    assert 'value="o2"' not in archived


def test_a_bad_time_filter_is_a_400_page_saying_why(filled: Shop) -> None:
    response = call(console_of(filled), "/letters", {"since": "yesterday"})

    assert response.status == 400
    assert "cannot read the time" in response.body


def test_a_time_filter_selects_by_when_they_were_dead_lettered(filled: Shop) -> None:
    console = console_of(filled)

    assert 'value="o1"' in call(console, "/letters", {"since": "1h"}).body
    assert 'value="o1"' not in call(console, "/letters", {"before": "1h"}).body


def test_letter_page_shows_everything_escaped(filled: Shop) -> None:
    response = call(console_of(filled), "/letter", {"id": "p<1>"})

    assert response.status == 200
    assert "<script" not in response.body.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.body  # payload, reason, attribute
    assert "Traceback" in response.body
    assert "ValueError" in response.body
    assert "pages" in response.body


@pytest.mark.parametrize("path", ["/", "/letters"])
def test_no_page_writes_a_stored_script_unescaped(filled: Shop, path: str) -> None:
    body = call(console_of(filled), path).body

    assert "<script" not in body.lower()


def test_letter_payload_as_hex(filled: Shop) -> None:
    body = call(console_of(filled), "/letter", {"id": "o1", "view": "hex"}).body

    assert "6f 72 64 65 72 20 31" in body  # "order 1"


def test_a_payload_that_is_not_text_is_shown_in_hex(shop: Shop) -> None:
    shop.fail(b"<\xff\x00", "bin")

    body = call(console_of(shop), "/letter", {"id": "bin"}).body

    assert "3c ff 00" in body


def test_an_unknown_letter_is_404(filled: Shop) -> None:
    assert call(console_of(filled), "/letter", {"id": "nope"}).status == 404


def test_a_request_for_another_host_is_refused(filled: Shop) -> None:
    response = call(console_of(filled), "/", host="evil.example:8080")

    assert response.status == 403


@pytest.mark.parametrize("token", [None, "forged"])
def test_an_action_without_the_csrf_token_changes_nothing(filled: Shop, token: str | None) -> None:
    form = [("action", "purge"), ("id", "o1")]
    if token is not None:
        form.append(("csrf", token))

    response = call(console_of(filled), "/actions", form=form)

    assert response.status == 403
    assert ids(filled) == [b"o1", b"o2", b"p<1>"]
    assert history(filled) == []


def test_actions_are_refused_as_get(filled: Shop) -> None:
    response = call(console_of(filled), "/actions", {"action": "purge", "id": "o1"})

    assert response.status == 405
    assert ids(filled) == [b"o1", b"o2", b"p<1>"]


def test_archive_a_selection(filled: Shop) -> None:
    console = console_of(filled)
    form = [("csrf", console.csrf), ("action", "archive"), ("id", "o1"), ("id", "p<1>")]

    response = call(console, "/actions", form=form)

    assert response.status == 200
    assert "archived 2 dead letter(s)" in response.body
    assert ids(filled) == [b"o2"]
    assert ids(filled, archived=True) == [b"o1", b"p<1>"]
    operation, count, user, _ = history(filled)[0]
    assert (operation, count) == ("archive", 2)
    assert user.endswith(" (console)")


def test_purge_a_group(filled: Shop) -> None:
    console = console_of(filled)
    with SQLiteDLQ(filled.dlq) as dlq:
        group = fingerprint(dlq.record(b"o1"))
    form = [("csrf", console.csrf), ("action", "purge"), ("group", group)]

    response = call(console, "/actions", form=form)

    assert "purged 2 dead letter(s)" in response.body
    assert ids(filled) == [b"p<1>"]
    assert history(filled)[0][:2] == ("purge", 2)


def test_replay_in_process_removes_those_handled(filled: Shop) -> None:
    filled.fix()
    console = console_of(filled, replay=True)
    form = [("csrf", console.csrf), ("action", "replay"), ("id", "o1"), ("id", "p<1>")]

    response = call(console, "/actions", form=form)

    assert "1 handled and removed" in response.body
    assert "1 failed again (kept)" in response.body
    assert ids(filled) == [b"o2", b"p<1>"]
    with SQLiteDLQ(filled.dlq) as dlq:
        assert dlq.record(b"p<1>").times == 2
    operation, count, _, outcome = history(filled)[0]
    assert (operation, count) == ("replay", 2)
    assert "1 handled" in outcome


def test_replay_is_offered_and_allowed_only_with_a_replayer(filled: Shop) -> None:
    console = console_of(filled)
    form = [("csrf", console.csrf), ("action", "replay"), ("id", "o1")]

    response = call(console, "/actions", form=form)

    assert 'value="replay"' not in call(console, "/letters").body
    assert 'value="replay"' in call(console_of(filled, replay=True), "/letters").body
    assert response.status == 400
    assert "--processor or --broker-url" in response.body
    assert ids(filled) == [b"o1", b"o2", b"p<1>"]
    assert history(filled)[0][3].startswith("failed: ")


def test_an_action_choosing_nothing_is_a_400(filled: Shop) -> None:
    console = console_of(filled)

    response = call(console, "/actions", form=[("csrf", console.csrf), ("action", "purge")])

    assert response.status == 400
    assert ids(filled) == [b"o1", b"o2", b"p<1>"]


def test_a_dlq_that_is_gone_is_a_503_page_in_one_line(filled: Shop) -> None:
    filled.dlq.unlink()

    response = call(console_of(filled), "/")

    assert response.status == 503
    assert "does not exist" in response.body
    assert "Traceback" not in response.body
