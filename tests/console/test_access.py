"""The console's token, called through its WSGI application: who is let in, the
cookie, the variable that gives it, and the request lines logged without it."""

from __future__ import annotations

import pytest

from missive.console import Console
from missive.console.access import redact_token, token_from
from tests.console.conftest import Shop, call, console_of, history, ids


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_COOKIE": "missive_console_80=forged-token-of-some-length"},
        {"QUERY_STRING": "token=forged-token-of-some-length"},
        {"HTTP_AUTHORIZATION": "Bearer forged-token-of-some-length"},
        {"HTTP_COOKIE": "missive_console_81=the-right-token-but-another-port"},
    ],
    ids=["none", "wrong-cookie", "wrong-query", "wrong-bearer", "other-port-cookie"],
)
def test_a_request_without_the_right_token_is_401_and_shows_nothing(
    filled: Shop, headers: dict[str, str]
) -> None:
    console = Console(str(filled.dlq), token="the-right-token-but-another-port")

    response = call(console, "/letter", {"id": "o1"}, headers=headers)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "?token=" in response.body
    assert "order 1" not in response.body
    assert "Set-Cookie" not in response.headers


def test_an_action_without_the_token_changes_nothing(filled: Shop) -> None:
    console = console_of(filled)
    form = [("csrf", console.csrf), ("action", "purge"), ("id", "o1")]

    response = call(console, "/actions", form=form, headers={})

    assert response.status == 401
    assert ids(filled) == [b"o1", b"o2", b"p<1>"]
    assert history(filled) == []


def test_the_token_in_the_address_sets_a_strict_http_only_cookie(filled: Shop) -> None:
    console = console_of(filled)

    response = call(console, "/", headers={"QUERY_STRING": f"token={console.token}"})

    assert response.status == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"missive_console_80={console.token};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert console.token not in response.body


def test_the_cookie_alone_lets_pages_and_forms_in_without_setting_it_again(filled: Shop) -> None:
    console = console_of(filled)
    form = [("csrf", console.csrf), ("action", "archive"), ("id", "o1")]

    page = call(console, "/letters")
    posted = call(console, "/actions", form=form)

    assert page.status == 200
    assert posted.status == 200
    assert "Set-Cookie" not in page.headers
    assert ids(filled) == [b"o2", b"p<1>"]


def test_a_bearer_header_carries_the_token_for_scripts(filled: Shop) -> None:
    console = console_of(filled)

    response = call(console, "/", headers={"HTTP_AUTHORIZATION": f"Bearer {console.token}"})

    assert response.status == 200
    assert "Set-Cookie" not in response.headers


def test_the_host_check_comes_before_the_token(filled: Shop) -> None:
    response = call(console_of(filled), "/", host="evil.example", headers={})

    assert response.status == 403


@pytest.mark.parametrize("value", ["short", "x" * 20 + " y", "x" * 20 + ";y", "é" * 20])
def test_a_token_from_the_environment_must_be_long_and_plain(value: str) -> None:
    with pytest.raises(ValueError, match="MISSIVE_CONSOLE_TOKEN"):
        token_from({"MISSIVE_CONSOLE_TOKEN": value})


def test_a_token_from_the_environment_is_used_as_given() -> None:
    assert token_from({"MISSIVE_CONSOLE_TOKEN": "abc-DEF_123.~xyz"}) == "abc-DEF_123.~xyz"
    assert token_from({}) is None


def test_request_lines_are_logged_without_the_token() -> None:
    line = redact_token('"GET /letters?token=s3cr3t-value&handler=x HTTP/1.1" 200')

    assert "s3cr3t" not in line
    assert "token=...&handler=x" in line
