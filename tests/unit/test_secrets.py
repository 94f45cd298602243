"""No part of a password is ever printed: DSNs are parsed the way libpq parses them, and
what libpq cannot parse is not shown at all. The connection attempts are real (to a closed
port on 127.0.0.1), through the library and through the CLI."""

import re
import socket

import pytest
from click.testing import CliRunner

from clipsql.cli import main
from clipsql.database import connection
from clipsql.errors import DatabaseError

PASSWORDS = ["s3cr@tpass", "pa%25ss%40word", "w1th sp4ce", "quo'te\"d", "p@ssw0rd@x9z",
             "c0lon:slash/q?x=1&y", "ÜnïcødéPässwörd"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def dsns(password: str, port: int):
    from urllib.parse import quote

    yield f"postgresql://alice:{quote(password, safe='')}@127.0.0.1:{port}/photos"
    yield f"postgresql://alice:{password}@127.0.0.1:{port}/photos"  # unencoded, as people type it
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    yield f"host=127.0.0.1 port={port} user=alice password='{escaped}' dbname=photos"
    yield f"host=127.0.0.1 port={port} user=alice password={password} dbname=photos"
    yield f"postgresql://127.0.0.1:{port}/photos?user=alice&password={quote(password, safe='')}"


def secret_pieces(password: str):
    from urllib.parse import quote

    pieces = {password, quote(password, safe="")}
    pieces |= {p for p in re.split(r"[\s@:/?&='\"%]+", password) if len(p) >= 4}
    return pieces


def leaks(text: str, password: str) -> list[str]:
    return [p for p in secret_pieces(password) if p in text]


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_never_shows_a_piece_of_the_password(password):
    for dsn in dsns(password, 5432):
        shown = connection.redact(dsn)
        assert not leaks(shown, password), (dsn, shown)


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_failed_connection_says_why_without_the_password(password):
    port = closed_port()
    for dsn in dsns(password, port):
        with pytest.raises(DatabaseError) as info:
            connection.connect(dsn)
        message = str(info.value)
        assert not leaks(message, password), (dsn, message)
        assert "cannot connect" in message or "cannot be parsed" in message, message


def test_the_cli_prints_one_line_without_the_password():
    port = closed_port()
    password = "hunter2@s3cr3t w0rd"
    for dsn in dsns(password, port):
        out = CliRunner().invoke(main, ["status", "--db", dsn])
        assert out.exit_code == 1 and "Traceback" not in out.output
        assert len(out.output.strip().splitlines()) == 1, out.output
        assert not leaks(out.output, password), (dsn, out.output)


def test_what_can_be_shown_is_shown():
    assert connection.redact("postgresql://alice:pw123@db:5433/x?sslmode=require") == \
        "postgresql://alice:***@db:5433/x?sslmode=require"
    assert connection.redact("postgresql://db/x?password=pw123&sslmode=require") == \
        "postgresql://db/x?password=***&sslmode=require"
    assert connection.redact("host=db password='a b' user=u") == "host=db password=*** user=u"
    assert connection.redact("host=db password=a b") == connection.HIDDEN  # libpq cannot parse it
