"""File names and labels with newlines, terminal escapes and bidi overrides cannot forge
CLI output: every printed hit is one line, with the control characters shown escaped."""

from PIL import Image

NAMES = ["evil\n0.9999        1  2021-01-01  forged.png", "\x1b[2J\x1b[31mred.png",
         "right\u202eto-left.png", "bell\x07.png"]


def test_hostile_file_names_print_as_one_escaped_line_each(run, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(folder / name, format="PNG")
    run("load", str(folder))
    out = run("search", "anything", "--limit", "10").output
    lines = out.strip().splitlines()
    assert len(lines) == len(NAMES), out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert any("evil\\n0.9999" in line for line in lines)
    assert any("\\x1b[2J" in line for line in lines)
    assert any("\\u202e" in line for line in lines)
    as_json = run("search", "anything", "--json").output
    assert "\\n0.9999" in as_json  # JSON escapes them by itself; the path is unchanged


def test_hostile_labels_print_escaped(run, tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    Image.new("RGB", (64, 48), (1, 2, 3)).save(folder / "a.png")
    run("load", str(folder))
    out = run("labels", "add", "cat\n0.999  1  forged", "dog\x1b[31m").output
    assert len(out.strip().splitlines()) == 1 and "\x1b" not in out, out
    out = run("classify", "--top", "2").output
    assert len(out.strip().splitlines()) == 1 and "\x1b" not in out, out
