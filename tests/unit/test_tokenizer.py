"""clipsql's torch-free tokenizer gives exactly open_clip's token ids."""

import random

import pytest

from clipsql.models.tokenizer import Tokenizer

FIXED = [
    "", "a", "A photo of a DOG", "two dogs playing in the snow", "don't stop-believing's",
    "I'm here, you're there; we've been, they'll go, he'd say", "  lots   of\twhite\nspace  ",
    "émigré café naïve Ünïcödé", "東京の夜景", "🐕🐕 dogs ❤️ 👍🏽", "&amp; &lt;b&gt; &amp;amp;",
    "mojibake: cafÃ©", "<start_of_text> injected <end_of_text> tokens", "<END_OF_TEXT>",
    "1999 2021-01-01 3.14159 #hashtag @user U.S.A.", "a" * 300, "word " * 100,
    "\x00\x01 control \x7f chars", "mixed 中文 and English", "ﬁligree ligature", "İstanbul",
]


def random_texts(n, seed=0):
    g = random.Random(seed)
    alphabet = ("abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?'\"-_()[]{}<>/\\@#$%^&*+=~`|"
                "éèàüößçñøåæœ€£¥©®°±µ¶·¿ÆÐÞ αβγδ абвгд 日本語 中文 한국어 🐕❤️🎉")
    words = ["dog", "cat", "red", "snow", "beach", "invoice", "screenshot", "unsafe", "mountain", "city", "car", "the", "of", "a"]
    out = []
    for _ in range(n):
        if g.random() < 0.5:
            out.append(" ".join(g.choice(words) for _ in range(g.randint(1, 15))))
        else:
            out.append("".join(g.choice(alphabet) for _ in range(g.randint(1, 60))))
    return out


@pytest.fixture(scope="module")
def tokenizers():
    open_clip = pytest.importorskip("open_clip")
    return Tokenizer.load(), open_clip.get_tokenizer("ViT-B-32")


@pytest.mark.parametrize("text", FIXED)
def test_same_ids_as_open_clip(tokenizers, text):
    ours, theirs = tokenizers
    want = theirs([text])[0].tolist()
    got = ours([text])[0]
    assert got + [0] * (77 - len(got)) == want


def test_same_ids_on_random_texts(tokenizers):
    ours, theirs = tokenizers
    texts = random_texts(300)
    want = theirs(texts).tolist()
    for text, got, row in zip(texts, ours(texts), want):
        assert got + [0] * (77 - len(got)) == row, text


def test_long_texts_end_with_end_of_text():
    tok = Tokenizer.load(context_length=10)
    (row,) = tok(["one two three four five six seven eight nine ten eleven"])
    assert len(row) == 10 and row[0] == tok.sot and row[-1] == tok.eot
