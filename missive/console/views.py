"""The console's pages, as HTML text: groups, the list, one dead letter, results.

Every value that comes from a DLQ (ids, reasons, tracebacks, attributes, payloads,
handler names) or from a request goes through :func:`e` (:func:`html.escape`,
quotes too) before it is written into a page. Pages have no script and load
nothing else: their style is inline, which the Content-Security-Policy allows.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlencode

from missive.attempts import describe_history, read_history
from missive.cli._common import format_id
from missive.cli._output import hex_preview, safe_text
from missive.cli._show import when
from missive.dlq import DeadLetter
from missive.dlq._codec import encode_attributes
from missive.dlq.groups import Group, fingerprint

__all__ = ["FILTERS", "e", "group_page", "letter_page", "list_page", "message_page", "page"]

#: The list's filters, as their query parameters are named.
FILTERS = ("handler", "reason", "since", "before", "group", "archived")

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{background:#223;color:#fff;padding:.6em 1em}header a{color:#fff;margin-right:1.2em}
main{padding:1em}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f8}pre{background:#f6f6f6;padding:.6em;overflow:auto;white-space:pre-wrap}
.notice{background:#eef6ee;border:1px solid #9c9;padding:.5em}
.error{background:#fbeeee;border:1px solid #c99;padding:.5em}
form.inline{display:inline}button{margin:.2em .3em .2em 0}
.danger{color:#a00}dt{font-weight:bold;margin-top:.5em}dd{margin-left:1em}
fieldset{border:1px solid #ddd;margin-bottom:1em}label{margin-right:1em}
"""


def e(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes too): safe in content and attributes."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str, *, notice: str | None = None, error: str | None = None) -> str:
    """A whole page: the header, ``notice`` or ``error`` (plain text), then ``body`` (HTML)."""
    top = ""
    if notice:
        top += f'<p class="notice">{e(notice)}</p>'
    if error:
        top += f'<p class="error">{e(error)}</p>'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)} - missive console</title><style>{_STYLE}</style></head><body>"
        '<header><a href="/">Failure groups</a><a href="/letters">Dead letters</a>'
        '<a href="/letters?archived=1">Archived</a></header>'
        f"<main><h1>{e(title)}</h1>{top}{body}</main></body></html>"
    )


def _actions(csrf: str, can_replay: bool, hidden: Mapping[str, str] | None = None) -> str:
    fields = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    for name, value in (hidden or {}).items():
        fields += f'<input type="hidden" name="{e(name)}" value="{e(value)}">'
    buttons = ""
    if can_replay:
        buttons += '<button name="action" value="replay">Replay</button>'
    buttons += '<button name="action" value="archive">Archive</button>'
    buttons += '<button class="danger" name="action" value="purge">Purge</button>'
    return fields + buttons


def group_page(groups: Sequence[Group], csrf: str, can_replay: bool) -> str:
    """The failure groups, most dead letters first, each with its actions."""
    if not groups:
        return page("Failure groups", "<p>No dead letters.</p>")
    rows = []
    for group in groups:
        link = "/letters?" + urlencode({"group": group.id})
        actions = _actions(csrf, can_replay, {"group": group.id})
        rows.append(
            f'<tr><td><a href="{e(link)}">{e(group.id)}</a></td><td>{e(group.kind)}</td>'
            f"<td>{group.count}</td><td>{e(when(group.first_seen))}</td>"
            f"<td>{e(when(group.last_seen))}</td><td>{e(', '.join(group.handlers) or '-')}</td>"
            f"<td>{e(safe_text(group.example))}</td>"
            f'<td><form class="inline" method="post" action="/actions">{actions}</form></td></tr>'
        )
    body = (
        "<table><tr><th>Group</th><th>Kind</th><th>Count</th><th>First seen</th>"
        "<th>Last seen</th><th>Handlers</th><th>Example</th><th>Actions</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return page("Failure groups", body)


def _filter_form(filters: Mapping[str, str]) -> str:
    inputs = []
    for name, hint in (
        ("handler", "handler name"),
        ("reason", "text in the reason"),
        ("since", "2026-01-31T10:00 or 2h"),
        ("before", "ISO time or 30m"),
        ("group", "group id"),
    ):
        inputs.append(
            f'<label>{name} <input name="{name}" value="{e(filters.get(name, ""))}" '
            f'placeholder="{e(hint)}"></label>'
        )
    checked = " checked" if filters.get("archived") else ""
    inputs.append(
        f'<label><input type="checkbox" name="archived" value="1"{checked}> archived</label>'
    )
    return (
        '<form method="get" action="/letters"><fieldset><legend>Filters</legend>'
        + "".join(inputs)
        + '<button>Apply</button> <a href="/letters">clear</a></fieldset></form>'
    )


def list_page(
    letters: Iterable[DeadLetter],
    filters: Mapping[str, str],
    page_number: int,
    has_next: bool,
    csrf: str,
    can_replay: bool,
) -> str:
    """A page of dead letters that match ``filters``, with checkboxes and actions."""
    rows = []
    for letter in letters:
        shown = format_id(letter.message_id)
        link = "/letter?" + urlencode({"id": shown})
        group = fingerprint(letter)
        rows.append(
            f'<tr><td><input type="checkbox" name="id" value="{e(shown)}"></td>'
            f'<td><a href="{e(link)}">{e(safe_text(shown))}</a></td>'
            f"<td>{e(when(letter.dead_lettered_at))}</td>"
            f"<td>{e(safe_text(letter.summary))}</td><td>{e(letter.handler or '-')}</td>"
            f'<td><a href="/letters?{e(urlencode({"group": group}))}">{e(group)}</a></td>'
            f"<td>{letter.size}</td><td>{letter.times}</td></tr>"
        )
    body = _filter_form(filters)
    if not rows:
        return page("Dead letters", body + "<p>No dead letters match.</p>")
    body += (
        '<form method="post" action="/actions"><table><tr><th></th><th>ID</th><th>When</th>'
        "<th>Reason</th><th>Handler</th><th>Group</th><th>Size</th><th>Times</th></tr>"
        + "".join(rows)
        + "</table><p>Selected: "
        + _actions(csrf, can_replay)
        + "</p></form>"
    )
    kept = {name: value for name, value in filters.items() if value}
    links = []
    if page_number > 1:
        previous = urlencode({**kept, "page": page_number - 1})
        links.append(f'<a href="/letters?{e(previous)}">previous</a>')
    links.append(f"page {page_number}")
    if has_next:
        following = urlencode({**kept, "page": page_number + 1})
        links.append(f'<a href="/letters?{e(following)}">next</a>')
    return page("Dead letters", body + "<p>" + " | ".join(links) + "</p>")


def _payload_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if safe_text(text, keep_newlines=True) == text else None


def letter_page(letter: DeadLetter, csrf: str, can_replay: bool, view: str) -> str:
    """Everything stored about one dead letter; its payload as text, or as hex when it
    is not text or ``view`` is ``"hex"``."""
    shown = format_id(letter.message_id)
    fields = [
        ("ID", safe_text(shown)),
        ("Message class", letter.message_class),
        ("Handler", letter.handler or "-"),
        ("Exception", letter.exc_type or "-"),
        ("Group", fingerprint(letter)),
        ("Size", f"{letter.size} bytes"),
        ("Times dead-lettered", str(letter.times)),
        ("First dead-lettered", when(letter.first_dead_lettered_at)),
        ("Last dead-lettered", when(letter.dead_lettered_at)),
        ("Archived until", "-" if letter.expires_at is None else when(letter.expires_at)),
        ("Reason", str(letter.reason)),
    ]
    body = "<dl>" + "".join(f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in fields)
    body += "</dl>"
    history = read_history(letter.attributes)
    if history:
        body += f"<h2>Attempts</h2><pre>{e(describe_history(history))}</pre>"
    if letter.traceback:
        body += f"<h2>Traceback</h2><pre>{e(letter.traceback)}</pre>"
    body += f"<h2>Attributes</h2><pre>{e(encode_attributes(letter.attributes))}</pre>"
    payload = letter.message.raw_data
    text = None if view == "hex" else _payload_text(payload)
    base = {"id": shown}
    if text is None:
        other = ""
        if _payload_text(payload) is not None:
            other = f' (<a href="/letter?{e(urlencode(base))}">as text</a>)'
        body += f"<h2>Payload: {len(payload)} bytes, hex{other}</h2>"
        body += f"<pre>{e(hex_preview(payload, 4096))}</pre>"
    else:
        link = "/letter?" + urlencode({**base, "view": "hex"})
        body += f'<h2>Payload: {len(payload)} bytes of text (<a href="{e(link)}">as hex</a>)</h2>'
        body += f"<pre>{e(text)}</pre>"
    body += f'<form method="post" action="/actions">{_actions(csrf, can_replay, base)}</form>'
    return page("Dead letter", body)


def message_page(title: str, *, notice: str | None = None, error: str | None = None) -> str:
    """A page saying what an action did, or what went wrong, with links onwards."""
    body = '<p><a href="/">Failure groups</a> | <a href="/letters">Dead letters</a></p>'
    return page(title, body, notice=notice, error=error)
