"""The Redis protocol, as much of it as RedisBus's own connections speak (private, pure).

Invariants: :func:`command` writes any bytes (binary safe: lengths, not separators);
:func:`parse_replies` takes off the front of a buffer only whole replies and returns the rest
untouched, so bytes may arrive split anywhere. RESP2 and RESP3 both parse: a push (RESP3) is a
:class:`Push`, an error reply an :class:`ErrorReply` (a value: the caller decides what it
means); a type that a publish or a subscription never gets (maps, doubles, ...) or a
malformed reply raises ``ConnectionError`` (never anything else), and the caller drops the
connection.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ErrorReply", "Push", "command", "parse_replies"]


class Push(list[Any]):
    """A RESP3 push (``>``): pub/sub messages, and notices a server may send unasked."""


class ErrorReply(str):
    """An error reply's text (``NOSCRIPT No matching script...``)."""


def command(*parts: bytes) -> bytes:
    """One command (an array of bulk strings), ready to write."""
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)])


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def parse_replies(buffer: bytes) -> tuple[list[Any], bytes]:
    """The whole replies at the start of ``buffer`` and the bytes left after them. Arrays become
    lists, bulk and simple strings bytes, integers ints, nulls None."""
    replies: list[Any] = []
    start = 0
    try:
        while start < len(buffer):
            reply, start = _parse(buffer, start)
            replies.append(reply)
    except _Incomplete:
        pass
    except ValueError:  # a length or an integer that is not one
        raise ConnectionError("malformed Redis reply") from None
    return replies, buffer[start:]


def _parse(buffer: bytes, start: int) -> tuple[Any, int]:
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, line, after = buffer[start], buffer[start + 1 : end], end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise _Incomplete
        return buffer[after : after + size], after + size + 2
    if kind == 58:  # : integer
        return int(line), after
    if kind in (42, 62):  # * array, > push
        count = int(line)
        items: list[Any] = Push() if kind == 62 else []
        for _ in range(count):
            item, after = _parse(buffer, after)
            items.append(item)
        return (items if count >= 0 else None), after
    if kind == 43:  # + simple string
        return line, after
    if kind == 45:  # - error
        return ErrorReply(line.decode(errors="replace")), after
    if kind == 95:  # _ null (RESP3)
        return None, after
    raise ConnectionError(f"unexpected Redis reply type {chr(kind)!r}")
