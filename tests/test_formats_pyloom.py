"""The original Python loom: current and old formats, hoisted trees, model-response backups."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from interop_support import (
    by_source_id,
    cli,
    cursor_position,
    fixture,
    imported,
    longest_path,
    shared_response_tree,
    signature,
    widest,
    write_json,
)
from loom import formats, ops
from loom.document import Document
from loom.errors import DocumentError
from loom.formats.forest import graft
from loom.formats.tokens import prompt_fingerprint

DEMO = fixture("pyloom_loom_demo.json")
TELEOLOGY = fixture("pyloom_teleology.json")
RESPONSES = [
    fixture("pyloom_teleology_model_responses_1.json"),
    fixture("pyloom_teleology_model_responses_2.json"),
]


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out, stack = [], [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(current.get("children", []))
        if "masked_head" in current:
            stack.append(current["masked_head"])
    return out


def test_demo_imports_whole_with_chapters_tags_and_archive() -> None:
    """764 nodes, depth 21, up to 58 children; chapters become titled bookmarks."""
    doc = imported(DEMO)
    raw = json.loads(DEMO.read_text(encoding="utf-8"))
    source = _walk(raw["root"])
    ids = by_source_id(doc)
    assert len(doc) == 764
    assert longest_path(doc) - 1 == 21
    assert widest(doc) == 58
    archived = [n for n in source if "archived" in n.get("tags", [])]
    assert sum(1 for r in doc.nodes.values() if r.get("archived")) == len(archived) == 106
    bookmarked = {n["id"] for n in source if "bookmark" in n.get("tags", [])}
    chapters = {
        n["id"]: raw["chapters"][n["chapter_id"]]["title"] for n in source if "chapter_id" in n
    }
    assert {s for s in ids if "bookmark" in doc.nodes[ids[s]]} == bookmarked | set(chapters)
    for node_id, title in chapters.items():
        assert doc.nodes[ids[node_id]]["bookmark"]["title"] == title
    assert sum(1 for r in doc.nodes.values() if "demo" in r.get("tags", [])) == 302
    for node in source:
        rec = doc.nodes[ids[node["id"]]]
        assert rec["text"] == node["text"]
        assert bool(rec.get("visited")) == bool(node.get("visited"))
        fields = rec["meta"]["import"].get("fields", {})
        for key in ("multimedia", "frame", "text_attributes", "chapter_id"):
            if key in node:
                assert fields[key] == node[key]  # kept as they were
    assert doc.cursor_id == ids[raw["selected_node_id"]]
    header = doc.data["import"]["pyloom"][0]["fields"]
    assert header["generation_settings"]["model"] == "davinci"
    assert doc.title == "pyloom_loom_demo"


def test_demo_notes_missing_responses() -> None:
    forest = formats.read(DEMO)
    assert any(
        "368 node(s) point to model responses that were not found" in n for n in forest.notes
    )
    node = next(n for n in forest.nodes.values() if "generation_id" in n.fields)
    assert node.fields["generation_id"].startswith("cmpl-")  # kept for a later join


def test_hoisted_tree_is_unzipped() -> None:
    """Saved while hoisted: the compound root gives way to the real chain in masked_head."""
    doc = imported(TELEOLOGY, responses=RESPONSES)
    ids = by_source_id(doc)
    assert len(doc) == 18
    assert "d0473610-ac97-11ed-8661-0d9eaf142f06" not in ids  # the compound (mask) node
    root = ids["f2e5d98e-ac87-11ed-8661-0d9eaf142f06"]
    tail = ids["f2e5d98f-ac87-11ed-8661-0d9eaf142f06"]
    assert doc.root_ids == [root] and doc.nodes[root]["children"] == [tail]
    assert len(doc.nodes[tail]["children"]) == 12
    cursor = ids["ded6d89b-ac97-11ed-8661-0d9eaf142f06"]
    assert doc.cursor_id == cursor
    assert doc.full_text(cursor).startswith("It is generally agreed that the sense of information")
    assert doc.full_text(cursor).endswith(doc.nodes[cursor]["text"])


def test_logprobs_from_backup_files_land_on_their_nodes() -> None:
    doc = imported(TELEOLOGY, responses=RESPONSES)
    with_probs = [r for r in doc.nodes.values() if "logprobs" in r.get("meta", {})]
    assert len(with_probs) == 11
    for rec in with_probs:
        lp = rec["meta"]["logprobs"]
        assert rec["text"].startswith("".join(lp["tokens"]))  # offsets line up with the text
        assert len(lp["tokens"]) == len(lp["lp"])
        assert all(isinstance(v, float) for v in lp["lp"])
        gen = rec["meta"]["gen"]
        assert gen["model"] == "davinci"
        assert gen["request"]["id"].startswith("cmpl-")
        assert gen["prompt"]["chars"] > 800
    # Byte tokens ("bytes:\\xe2\\x80", "bytes:\\x99") are joined into the character they spell.
    assert any("’" in lp_tok for r in with_probs for lp_tok in r["meta"]["logprobs"]["tokens"])
    edited = doc.nodes[by_source_id(doc)["5d1e8a3e-ac89-11ed-8661-0d9eaf142f06"]]
    assert "logprobs" not in edited["meta"]  # "Teleology" was typed before it: no token matches
    assert not {"logprobs", "generated_text"} & set(edited["meta"]["import"]["fields"])
    # The response it drifted from is kept once, whole, in the document's import record.
    kept = doc.data["import"]["pyloom"][0]["fields"]["model_responses"]
    assert set(kept) == {"cmpl-6jszGrw6Ac1hZKOjUJCQl4FG9FM11"}
    assert kept["cmpl-6jszGrw6Ac1hZKOjUJCQl4FG9FM11"]["completions"][0]["tokens"]


def test_counterfactuals_become_alternatives(tmp_path: Path) -> None:
    responses = json.loads(RESPONSES[0].read_text(encoding="utf-8"))
    rid = "cmpl-6jt09W4XSDqmvbxkAGiiZWrw2fc6N"
    tokens = responses[rid]["completions"][0]["tokens"]
    tokens[1]["counterfactuals"] = {"Tele": -1.9, "The": -0.7, "A": -2.5}
    path = write_json(tmp_path / "responses.json", responses)
    doc = imported(TELEOLOGY, responses=[path, RESPONSES[1]])
    rec = doc.nodes[by_source_id(doc)["7e696e20-ac89-11ed-8661-0d9eaf142f06"]]
    top = rec["meta"]["logprobs"]["top"]
    assert top[0] == []
    assert top[1] == [["The", -0.7], ["Tele", -1.9], ["A", -2.5]]


@pytest.mark.parametrize(
    "names",
    [
        (
            "model_responses-2023-02-14-17.03.35.json",
            "backups/model_responses-2023-02-14-18.46.35.json",
        ),
        ("teleology_model_responses_1.json", "teleology_model_responses_2.json"),
    ],
)
def test_backup_files_beside_the_tree_are_found(tmp_path: Path, names: tuple[str, str]) -> None:
    tree = tmp_path / "teleology.json"
    shutil.copy(TELEOLOGY, tree)
    for source, name in zip(RESPONSES, names, strict=True):
        target = tmp_path / name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(source, target)
    doc = imported(tree)
    assert sum(1 for r in doc.nodes.values() if "logprobs" in r.get("meta", {})) == 11


def test_without_backups_nothing_is_lost(tmp_path: Path) -> None:
    tree = tmp_path / "teleology.json"
    shutil.copy(TELEOLOGY, tree)
    forest = formats.read(tree)
    assert any("12 node(s) point to model responses" in n for n in forest.notes)
    doc = Document.new()
    graft(doc, forest)
    exported = json.loads(formats.export(doc, "pyloom"))
    pointers = [n["generation"] for n in _walk(exported["root"]) if "generation" in n]
    assert len(pointers) == 12 and all(p["id"].startswith("cmpl-") for p in pointers)


def test_template_nodes_are_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    text = "{__import__('pathlib').Path(" + repr(str(marker)) + ").write_text('x')}"
    tree = {
        "root": {
            "id": "r",
            "text": "",
            "children": [{"id": "t", "text": text, "template": True, "children": []}],
        }
    }
    doc = imported(write_json(tmp_path / "tree.json", tree))
    rec = doc.nodes[by_source_id(doc)["t"]]
    assert rec["text"] == text
    assert rec["meta"]["import"]["fields"]["template"] is True
    formats.export(doc, "pyloom")
    formats.export(doc, "html")
    assert not marker.exists()


def test_old_format_before_september_2021(tmp_path: Path) -> None:
    choice = {
        "text": " Hello there",
        "index": 0,
        "finish_reason": "length",
        "model": "davinci",
        "prompt": "Say:",
        "logprobs": {
            "tokens": [" Hello", " there"],
            "token_logprobs": [-0.3, -1.2],
            "top_logprobs": [{" Hello": -0.3, " Hi": -1.5}, {" there": -1.2}],
            "text_offset": [4, 10],
        },
    }
    tree = {
        "root": {
            "id": "r",
            "text": "Say:",
            "children": [
                {
                    "id": "a",
                    "text": " Hello there",
                    "bookmark": True,
                    "memory": "remember me",
                    "meta": {"generation": choice},
                    "children": [],
                },
                {"id": "b", "text": " Bye", "archived": True, "canonical": True, "children": []},
            ],
        },
        "chat_preferences": {"AI_name": "GPT-3"},
        "canonical": ["r"],
    }
    doc = imported(write_json(tmp_path / "old.json", tree))
    ids = by_source_id(doc)
    a, b, r = (doc.nodes[ids[k]] for k in "abr")
    assert a["kind"] == "model" and "bookmark" in a
    assert a["meta"]["logprobs"]["tokens"] == [" Hello", " there"]
    assert a["meta"]["logprobs"]["top"][0] == [[" Hello", -0.3], [" Hi", -1.5]]
    assert a["meta"]["gen"]["model"] == "davinci" and a["meta"]["gen"]["prompt"]["chars"] == 4
    assert a["meta"]["import"]["fields"]["memory"] == "remember me"
    assert b["archived"] is True and "canonical" in b["tags"]
    assert "canonical" in r["tags"]
    assert doc.data["import"]["pyloom"][0]["fields"]["chat_preferences"] == {"AI_name": "GPT-3"}


@pytest.mark.parametrize(
    "content",
    [
        {
            "text": "Once",
            "children": [{"text": " upon", "children": []}, {"text": " more", "children": []}],
        },
        [
            {"text": "Once", "children": [{"text": " upon", "children": []}]},
            {"text": "Second", "children": []},
        ],
    ],
)
def test_bare_node_and_list_of_nodes(tmp_path: Path, content: Any) -> None:
    doc = imported(write_json(tmp_path / "bare.json", content))
    texts = sorted(doc.full_text(i) for i in doc.nodes)
    assert "Once upon" in texts


def test_jsonl_lines_with_parent_ids(tmp_path: Path) -> None:
    lines = [
        {"id": "1", "text": "A"},
        {"id": "2", "text": "B", "parent_id": "1"},
        {"id": "3", "text": "C", "parentId": "1"},
        {"id": "4", "text": "D", "parent_id": "2"},
    ]
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    forest = formats.read(path)
    assert forest.format == "pyloom"
    doc = Document.new()
    graft(doc, forest)
    assert sorted(doc.full_text(i) for i in doc.nodes) == ["A", "AB", "ABD", "AC"]


def test_notes_and_history(tmp_path: Path) -> None:
    tree = {
        "root": {
            "id": "r",
            "text": "now",
            "notes": ["first note", "second note"],
            "history": [{"timestamp": "2021-09-16-21.55.18", "text": "before"}],
            "tags": ["my tag", "pinned"],
            "children": [],
        }
    }
    doc = imported(write_json(tmp_path / "t.json", tree))
    rec = doc.nodes[doc.root_ids[0]]
    assert rec["note"] == "first note\n\nsecond note"
    assert rec["history"] == [{"text": "before", "at": "2021-09-16T21:55:18.000Z"}]
    assert rec["tags"] == ["my-tag", "pinned"]  # loom tags are single words
    assert rec["meta"]["import"]["fields"]["tags"] == ["my tag", "pinned"]


def test_export_round_trip_of_the_demo(tmp_path: Path) -> None:
    first = imported(DEMO)
    out = tmp_path / "demo-again.json"
    out.write_bytes(formats.export(first, "pyloom"))
    second = imported(out)
    assert signature(second) == signature(first)
    assert cursor_position(second) == cursor_position(first)
    data = json.loads(out.read_text(encoding="utf-8"))
    raw = json.loads(DEMO.read_text(encoding="utf-8"))
    assert data["selected_node_id"] == raw["selected_node_id"]
    assert data["root"]["id"] == raw["root"]["id"]
    assert data["generation_settings"] == raw["generation_settings"]


def test_export_writes_logprobs_back_as_model_responses(tmp_path: Path) -> None:
    first = imported(TELEOLOGY, responses=RESPONSES)
    out = tmp_path / "teleology-out.json"
    out.write_bytes(formats.export(first, "pyloom"))
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data["model_responses"]) >= {
        "cmpl-6jszGrw6Ac1hZKOjUJCQl4FG9FM11",
        "cmpl-6jubk4dcn0p8vP8acssvjNfgRJfb3",
    }
    second = imported(out)

    def probs(doc: Document) -> list[Any]:
        return [doc.nodes[i].get("meta", {}).get("logprobs") for i in doc.walk()]

    assert probs(second) == probs(first)
    assert signature(second) == signature(first)


def test_exported_responses_carry_the_prompt_pyloom_reads() -> None:
    """pyloom's get_request_info reads response["prompt"]["text"]: every response has one."""
    originals: dict[str, Any] = {}
    for path in RESPONSES:
        originals.update(json.loads(path.read_text(encoding="utf-8")))
    data = json.loads(formats.export(imported(TELEOLOGY, responses=RESPONSES), "pyloom"))
    assert len(data["model_responses"]) == 3
    for rid, response in data["model_responses"].items():
        # Rebuilt from the branch above the node, it is the prompt pyloom sent.
        assert response["prompt"]["text"] == originals[rid]["prompt"]["text"]


def test_prompt_is_rebuilt_from_the_tree_when_its_digest_matches() -> None:
    def prompt_digest(text: str) -> dict[str, Any]:
        return dict(prompt_fingerprint(text)["prompt"])  # the engine's own digest

    doc = Document.new()
    root = ops.add_child(doc, None, "The lighthouse keeper")
    mid = ops.add_child(doc, root.id, " woke to find")
    whole = doc.full_text(mid.id)
    tail = whole[-10:]  # the part that fit the model's context
    for prompt in (whole, tail, "another text"):
        ops.add_child(
            doc, mid.id, " x", kind="model", meta={"gen": {"prompt": prompt_digest(prompt)}}
        )
    prompts = [
        r["prompt"] for r in json.loads(formats.export(doc, "pyloom"))["model_responses"].values()
    ]
    assert prompts[0] == {"text": whole}
    assert prompts[1] == {"text": tail}
    # Edited since: the text is gone, what loom knows of it stays.
    assert prompts[2] == {"text": "", **prompt_digest("another text")}


def test_several_trees_share_an_empty_root_that_comes_back_out(tmp_path: Path) -> None:
    doc = imported(TELEOLOGY, responses=RESPONSES)
    graft(doc, formats.read(fixture("openloom_existence_of_claude.json")))
    out = tmp_path / "two.json"
    out.write_bytes(formats.export(doc, "pyloom"))
    again = imported(out)
    assert len(again.root_ids) == 2
    assert signature(again) == signature(doc)


def test_deep_chain_imports_and_exports(tmp_path: Path) -> None:
    """Nested JSON thousands of levels deep: no recursion limit on the way in or out."""
    depth = 3000
    node: dict[str, Any] = {"id": f"n{depth}", "text": "x", "children": []}
    for i in range(depth - 1, 0, -1):
        node = {"id": f"n{i}", "text": "x", "children": [node]}
    path = tmp_path / "deep.json"
    path.write_text('{"root": ' + _dump_deep(node) + "}", encoding="utf-8")
    doc = imported(path)
    assert len(doc) == depth and longest_path(doc) == depth
    out = tmp_path / "deep-out.json"
    out.write_bytes(formats.export(doc, "pyloom"))
    assert longest_path(imported(out)) == depth


def _dump_deep(node: dict[str, Any]) -> str:
    """json.dumps recurses; build the nested chain's text with a loop instead."""
    chain: list[dict[str, Any]] = []
    current: dict[str, Any] | None = node
    while current is not None:
        chain.append(current)
        current = current["children"][0] if current["children"] else None
    heads = [
        f'{{"id": {json.dumps(n["id"])}, "text": {json.dumps(n["text"])}, "children": ['
        for n in chain
    ]
    return "".join(heads) + "]}" * len(chain)  # each list holds one child: no commas


@pytest.mark.parametrize(
    ("mutate", "phrase"),
    [
        (lambda d: d["root"].__setitem__("tail_id", "nowhere"), "is not inside its masked_head"),
        (lambda d: d["root"].__setitem__("masked_head", "text"), "not an object"),
        (
            lambda d: d["root"]["children"].append(
                {"id": d["root"]["children"][0]["id"], "text": "", "children": []}
            ),
            "is used by two nodes",
        ),
        (
            lambda d: d["root"]["children"][0].__setitem__("text", ["a"]),
            'has a "text" that is a list, not text',
        ),
        (lambda d: d["root"]["children"][0].__setitem__("children", {}), "not a list"),
        (
            lambda d: d["root"]["children"][0].__setitem__("generation", {"id": "x", "index": -1}),
            "not a count",
        ),
    ],
)
def test_damaged_trees_give_one_line(tmp_path: Path, mutate: Any, phrase: str) -> None:
    data = json.loads(TELEOLOGY.read_text(encoding="utf-8"))
    mutate(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(DocumentError) as caught:
        formats.read(path, format="pyloom")
    assert phrase in caught.value.message and "\n" not in caught.value.message


def test_bad_explicit_response_file(tmp_path: Path) -> None:
    bad = tmp_path / "model_responses-x.json"
    bad.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(DocumentError, match="not a pyloom model-responses file"):
        formats.read(TELEOLOGY, responses=[bad])


def test_prompt_fingerprint_is_the_engines_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """One implementation of a prompt's hash: imports record what loom's engine records."""
    import subprocess
    import sys

    import loom.generation.context
    from loom.formats.tokens import prompt_fingerprint

    prompt = "Once upon a time \ud800"  # a lone surrogate must not break the hash
    assert prompt_fingerprint(prompt) == {"prompt": loom.generation.context.prompt_digest(prompt)}
    sentinel = {"sha256": "sentinel", "chars": -1}
    monkeypatch.setattr(loom.generation.context, "prompt_digest", lambda _prompt: sentinel)
    assert prompt_fingerprint(prompt) == {"prompt": sentinel}
    # Hashing a prompt on import loads no network or async machinery.
    script = (
        "import sys\n"
        "from loom import formats\n"
        "from loom.formats.tokens import prompt_fingerprint\n"
        f"formats.read({str(TELEOLOGY)!r})\n"
        "prompt_fingerprint('x')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('asyncio', 'httpx', 'httpx2')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout


# ---- hostile files: one response shared by many nodes ------------------------------------------


def test_a_shared_response_is_not_copied_onto_every_node(tmp_path: Path) -> None:
    """200 nodes pointing at one 2,000-token response: each keeps only its own tokens."""
    source = write_json(tmp_path / "shared.json", shared_response_tree(nodes=200, tokens=2000))
    result = cli(tmp_path, "import", str(source), "--new", "out.loom.json")
    assert result.code == 0, result.stderr
    out = tmp_path / "out.loom.json"
    # Copying the response onto each node made this ~90 times the input. Now the response is
    # stored once (in the import record, and in the undo entry that can restore it).
    assert out.stat().st_size < 3 * source.stat().st_size
    saved = json.loads(out.read_text(encoding="utf-8"))
    nodes = [n for n in saved["nodes"].values() if n.get("meta", {}).get("gen")]
    assert len(nodes) == 200
    for node in nodes:
        fields = node["meta"]["import"].get("fields", {})
        assert "logprobs" not in fields and "generated_text" not in fields
        if node["text"].startswith(" edited"):
            assert "logprobs" not in node["meta"]
        else:  # the first three tokens still spell its text
            assert node["meta"]["logprobs"]["tokens"] == [" w0", " w1", " w2"]
            assert len(node["meta"]["logprobs"]["top"][0]) == 5
    kept = saved["import"]["pyloom"][0]["fields"]["model_responses"]
    assert list(kept) == ["cmpl-shared"]  # once, for the nodes edited after generation
    assert "200 node(s) were edited after generation" in result.stderr  # cut or rewritten


def test_an_import_that_would_balloon_is_refused(tmp_path: Path) -> None:
    """Each node's own tokens may still repeat a huge shared alternative list: capped."""
    tree = shared_response_tree(nodes=400, tokens=1, alternatives=3000)
    for child in tree["root"]["children"]:
        child["text"] = " w0"  # every node matches the one token and its 3,000 alternatives
    source = write_json(tmp_path / "balloon.json", tree)
    assert cli(tmp_path, "new", "story.loom.json", "--text", "keep").code == 0
    before = (tmp_path / "story.loom.json").read_bytes()
    result = cli(tmp_path, "import", str(source))
    assert result.code == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "the limit is 8× the input" in lines[0], result.stderr
    assert "many nodes repeat the same data" in lines[0]
    assert (tmp_path / "story.loom.json").read_bytes() == before


def test_empty_response_backups_are_accepted(tmp_path: Path) -> None:
    """pyloom writes `[]` for an empty backup; as --responses it adds nothing and fails nothing."""
    empty = tmp_path / "model_responses-2023-01-01-00.00.00.json"
    empty.write_text("[]", encoding="utf-8")
    doc = imported(TELEOLOGY, responses=[empty, *RESPONSES])
    assert sum(1 for r in doc.nodes.values() if "logprobs" in r.get("meta", {})) == 11
    result = cli(
        tmp_path, "import", str(TELEOLOGY), "--responses", str(empty), "--new", "t.loom.json"
    )
    assert result.code == 0, result.stderr
