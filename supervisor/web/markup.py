"""HTML built so that nothing reaches the page unescaped: `Html` is text already made safe, and `tag` escapes every
child and attribute value that is not `Html`.

What a worker printed is untrusted (a worker's stderr is whatever its libraries and inputs wrote), and so are
worker names, messages, node names and host names. Building pages from `tag` rather than by formatting strings
means a forgotten `escape` cannot happen: the only way to put raw text in is to wrap it in `Html` by hand, which
this package does only for markup it wrote itself.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Iterable, Union

from ..operate.dashboard import printable


class Html(str):
    """Markup that is safe to send as it is (escaped text, or tags this package made)."""

    __slots__ = ()


Child = Union["Html", str, int, float, None]
VOID = frozenset({"meta", "link", "br", "hr", "img", "input"})


def escape(value: Child) -> Html:
    """Text as HTML: `Html` as it is, None as nothing, anything else escaped (quotes too, for attributes)."""
    if isinstance(value, Html):
        return value
    if value is None:
        return Html("")
    return Html(html.escape(str(value), quote=True))


def tag(element: str, /, *children: Child, **attributes: str | None) -> Html:
    """`<element attr="value">children</element>`: `class_` gives the class, `http_equiv` http-equiv; an attribute
    given None is left out."""
    parts = [element]
    for key, value in attributes.items():
        if value is not None:
            parts.append(f'{key.rstrip("_").replace("_", "-")}="{escape(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if element in VOID:
        return Html(opening)
    return Html(opening + "".join(escape(child) for child in children) + f"</{element}>")


def join(parts: Iterable[Child], separator: str = "") -> Html:
    """Several children as one (each escaped unless it is `Html`)."""
    return Html(escape(separator).join(escape(part) for part in parts))


def text_block(text: str | None, limit: int) -> Html:
    """Captured output or a traceback in a `<pre>`: control characters shown defused, line breaks kept, cut to
    its last `limit` characters (the end is where an error is) with a line saying how much was left out."""
    text = text or ""
    cut = max(0, len(text) - limit)
    kept = text[cut:]
    note = tag("p", f"… {cut} earlier characters not shown", class_="cut") if cut else Html("")
    lines = "\n".join(printable(line) for line in kept.splitlines())
    return Html(note + tag("pre", lines))


UTC_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def moment(value: datetime | None) -> Html:
    """A time of the record (naive UTC) as `<time>`: UTC in its text and title; /static/app.js puts the viewer's
    own zone in the text, leaving UTC on hover."""
    if value is None:
        return Html("-")
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    shown = value.strftime(UTC_FORMAT)
    return tag("time", shown, datetime=value.isoformat(timespec="seconds") + "Z", title=shown)
