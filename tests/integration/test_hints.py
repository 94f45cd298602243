"""Hints that suggest a command quote its arguments for the shell: pasted into a shell, the
suggested command receives exactly the label, set name or text it names, never more."""

import shlex

import psycopg
import pytest

HOSTILE = ["it's", "$(touch /tmp/pwned)", "a b; rm -rf ~", "`id`", "x'\\''y", "\"quoted\"", "tab\there"]


def hint_of(conn, sql, params):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql, params)
    return info.value.diag.message_hint


@pytest.mark.parametrize("label", HOSTILE)
def test_label_hint_is_quoted(db, label):
    db.add_embeddings(["k"], [[1.0] * db.model.dim])  # binds the model
    hint = hint_of(db.conn, "SELECT * FROM clipsql.label_images(%s, 5, %s)", (label, label + "!"))
    prefix = "add it with: "
    assert hint.startswith(prefix)
    assert shlex.split(hint[len(prefix):]) == ["clipsql", "labels", "add", "--set", label + "!", label]


@pytest.mark.parametrize("text", HOSTILE)
def test_text_and_path_hints_are_quoted(db, text):
    db.add_embeddings(["k"], [[1.0] * db.model.dim])
    hint = hint_of(db.conn, "SELECT clipsql.text_embedding(%s)", (text,))
    assert shlex.split(hint.rpartition(": ")[2]) == ["clipsql", "embed-text", text]
    hint = hint_of(db.conn, "SELECT clipsql.image_embedding(%s::text)", ("/photos/" + text,))
    assert shlex.split(hint.rpartition(": ")[2]) == ["clipsql", "load", "/photos/" + text]
