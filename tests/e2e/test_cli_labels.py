"""`clipsql labels|classify|label-search|flag|duplicates` end to end (CliRunner, real database)."""

import json
import shutil

from tests.integration.test_duplicates import TINY_THRESHOLD, make_copies, scene


def test_labels_classify_store_search_flag_json(run, tmp_path):
    root = tmp_path / "pics"
    for i in range(6):
        scene(root / f"p{i}.png", i)
    run("load", str(root), "--json")
    added = json.loads(run("labels", "add", "cat", "dog", "car", "a screenshot", "--json").stdout)
    assert added["labels"] == ["cat", "dog", "car", "a screenshot"]
    run("labels", "add", "--set", "safety", "nudity", "violence", "weapons")
    sets = {s["name"]: s for s in json.loads(run("labels", "list", "--json").stdout)}
    assert sets["safety"]["labels"] == ["nudity", "violence", "weapons"]

    rows = json.loads(run("classify", "--top", "2", "--json").stdout)
    assert len(rows) == 6 and all(len(r["labels"]) == 2 for r in rows)
    assert all(r["labels"][0]["probability"] >= r["labels"][1]["probability"] for r in rows)
    full = json.loads(run("classify", "--top", "0", "--json").stdout)
    assert all(abs(sum(x["probability"] for x in r["labels"]) - 1) < 1e-4 for r in full)

    stored = json.loads(run("classify", "--store", "--json").stdout)
    assert (stored["computed"], stored["skipped"]) == (6, 0)
    scene(root / "p6.png", 6)
    scene(root / "p7.png", 7)
    run("load", str(root))
    assert "classified 2 images" in run("classify", "--store").stdout

    hits = json.loads(run("label-search", "dog", "--limit", "3", "--json").stdout)
    assert len(hits) == 3 and hits == sorted(hits, key=lambda h: -h["score"])
    flagged = json.loads(run("flag", "--set", "safety", "--threshold", "0.3", "--json").stdout)
    assert all(x["labels"][0]["probability"] >= 0.3 for x in flagged)
    # Human output: one line per image.
    assert len(run("classify").stdout.strip().splitlines()) == 8
    run("labels", "remove", "car")
    assert "removed set safety with 3 labels" in run("labels", "remove", "--set", "safety", "--all").stdout


def test_duplicates_command(run, tmp_path):
    root = tmp_path / "dups"
    make_copies(root, n_scenes=3)
    shutil.copy(root / "orig1.png", root / "orig1_exact.png")
    run("load", str(root))
    groups = json.loads(run("duplicates", "--threshold", str(TINY_THRESHOLD), "--json").stdout)
    assert sorted(len(g["ids"]) for g in groups) == [4, 4, 5]
    out = run("duplicates", "--threshold", str(TINY_THRESHOLD)).stdout
    assert out.count("group ") == 3


def test_errors_are_one_line(run, tmp_path):
    scene(tmp_path / "x" / "a.png", 1)
    run("load", str(tmp_path / "x"))
    result = run("classify", "--set", "nope", ok=False)
    assert result.exit_code == 1 and "no label set 'nope'" in result.output and "Traceback" not in result.output
    result = run("labels", "add", "cat", "--template", "no placeholder", ok=False)
    assert result.exit_code == 1 and "template" in result.output
    result = run("labels", "remove", ok=False)
    assert result.exit_code == 2
    result = run("label-search", "horse", ok=False)
    assert result.exit_code == 1 and "no label set" in result.output
    run("labels", "add", "cat")
    result = run("classify", "--where", "nonexistent = 1", ok=False)
    assert result.exit_code == 1 and "bad WHERE fragment" in result.output


def test_label_messages_count_right_and_show_versions_only_with_stored_results(run, tmp_path):
    scene(tmp_path / "x" / "a.png", 1)
    run("load", str(tmp_path / "x"))
    created = run("labels", "add", "cat", "dog").stdout
    assert created.strip() == "created set default with 2 labels: cat, dog"
    added = run("labels", "add", "car", "dog").stdout
    assert added.strip() == "set default: added 1 label, 3 labels in all: cat, dog, car"
    assert run("labels", "remove", "car").stdout.strip() == "removed 1 label from set default"
    listed = run("labels", "list").stdout
    assert listed.startswith("default (2 labels; templates: a photo of a {}.): ") and " v" not in listed
    run("classify", "--store")
    version = json.loads(run("labels", "list", "--json").stdout)[0]["version"]
    assert f"1 stored row of version {version}" in run("labels", "list").stdout
    run("labels", "add", "--set", "solo", "tree")
    assert run("labels", "remove", "--set", "solo", "--all").stdout.strip() == \
        "removed set solo with 1 label"
