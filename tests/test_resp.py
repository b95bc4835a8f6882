"""The Redis protocol of RedisBus's own connections (``_resp.py``): pure, no server."""

from __future__ import annotations

import pytest

from workflows_async._resp import ErrorReply, Push, command, parse_replies

MESSAGE = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\na\r\nb\r\n"
PUSH = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"  # RESP3


def test_a_command_is_an_array_of_binary_safe_bulk_strings() -> None:
    assert command(b"GET", b"k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert command(b"SET", b"k", b"a\r\nb") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"
    assert parse_replies(command(b"SET", b"k", b"a\r\nb")) == ([[b"SET", b"k", b"a\r\nb"]], b"")


def test_each_kind_of_reply() -> None:
    replies, rest = parse_replies(
        MESSAGE + PUSH + b"+PONG\r\n:-7\r\n$-1\r\n_\r\n*-1\r\n-NOSCRIPT No script\r\n"
    )
    assert rest == b""
    assert replies == [
        [b"message", b"ch", b"a\r\nb"], [b"subscribe", b"ch", 1], b"PONG", -7, None, None, None,
        "NOSCRIPT No script",
    ]  # fmt: skip
    assert [type(reply) for reply in (replies[0], replies[1], replies[-1])] == [
        list, Push, ErrorReply,
    ]  # fmt: skip


def test_a_reply_split_anywhere_is_kept_until_it_is_whole() -> None:
    for cut in range(1, len(MESSAGE)):
        first, rest = parse_replies(MESSAGE[:cut])
        assert first == [] and rest == MESSAGE[:cut]
        assert parse_replies(rest + MESSAGE[cut:] + PUSH[:3]) == (
            [[b"message", b"ch", b"a\r\nb"]],
            PUSH[:3],
        )


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"%1\r\n+a\r\n+b\r\n", "unexpected Redis reply type"),
        (b",1.5\r\n", "unexpected Redis reply type"),
        (b":x\r\n", "malformed"),
        (b"$z\r\nab\r\n", "malformed"),
        (b"*2\r\n:1\r\n:?\r\n", "malformed"),
    ],
)
def test_a_reply_the_bus_never_gets_is_a_connection_error(reply: bytes, why: str) -> None:
    with pytest.raises(ConnectionError, match=why):
        parse_replies(reply)
