"""The JSON contract: every command's --json answer, real, validated against the shipped
schema; one object on stdout, success or failure; the same keys for the same things;
--fields and brief lists."""

from __future__ import annotations

import json
import signal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from loom import payloads
from loom.cli.main import COMMANDS
from loom.generation import recovery

from conftest import Loom, Result
from fakeprovider import Fail, FakeProvider, Reply


@cache
def validator(command: str | None) -> Draft202012Validator:
    return Draft202012Validator(payloads.schema(command))


def valid(result: Result, command: str, code: int = 0) -> dict[str, Any]:
    """The one JSON object on stdout, checked against the schema of `command`'s answers."""
    assert result.code == code, f"exit {result.code}: {result.stderr}"
    answer = json.loads(result.stdout)  # a second object on stdout would fail here
    assert isinstance(answer, dict)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator(command).iter_errors(answer)
    ]
    assert not errors, f"{command}: {errors[:3]}\n{result.stdout[:2000]}"
    if answer["ok"]:
        assert answer["command"] == command
    return answer


def failed(result: Result, code: str, exit_code: int = 1) -> dict[str, Any]:
    """An error answer: the object on stdout, one human line on stderr."""
    answer = valid(result, "show", exit_code)  # every command's schema includes the error
    assert answer["ok"] is False and answer["error"]["code"] == code
    assert result.stderr.startswith("loom: error: ") and result.stderr.count("\n") == 1
    return answer


def test_the_shipped_schema_is_valid_and_names_every_command() -> None:
    whole = payloads.schema()
    Draft202012Validator.check_schema(whole)
    cli = {name for names in COMMANDS.values() for name in names} - {"models"}
    cli |= {"models", "models add", "models default", "models rm"}
    assert set(payloads.schema_commands()) == cli
    for command in payloads.schema_commands():
        Draft202012Validator.check_schema(payloads.schema(command))


def test_schema_command_prints_one_command_or_all(loom: Loom) -> None:
    one = json.loads(loom.ok("schema", "models", "add").stdout)
    assert one["$id"].endswith(":models-add") and "answer:models-add" in one["$defs"]
    assert "answer:show" not in one["$defs"] and "Error" in one["$defs"]
    whole = valid(loom("schema", "--json"), "schema")
    assert whole["version"] == payloads.VERSION and whole["schema"] == payloads.schema()
    failed(loom("schema", "nonsense", "--json"), "usage", 2)


def test_every_command_answers_by_the_schema(woven: Loom, tmp_path: Path) -> None:
    """One session through every command (each form of it), checked against the schema."""
    loom = woven
    env = loom.env  # type: ignore[attr-defined]

    def run(command: str, *args: str, code: int = 0, **kwargs: Any) -> dict[str, Any]:
        return valid(loom(*args, "--json", env=env, **kwargs), command, code)

    first = run("info", "info")
    root = first["cursor"]
    assert first["document"]["node_count"] == 1 and first["stats"]["live_node_count"] == 1
    run("new", "new", "other.loom.json", "--text", "x")
    assert run("use", "use", "s.loom.json")["document"]["file"] == str(tmp_path / "s.loom.json")
    run("set", "set", "title", "Tides")
    assert run("check", "check")["valid"] is True

    added = run("add", "add", " and the sea")
    assert added["parent"] == root and added["cursor"] == added["node"]["id"]
    prompt = added["node"]["id"]
    made = run("gen", "gen", "-n", "3", "-m", "base", "--logprobs", "2", "--max-tokens", "8")
    assert made["parent"] == prompt and len(made["nodes"]) == 3
    assert made["cursor"] == prompt and "meta" not in made["nodes"][0]
    child = made["nodes"][0]["id"]
    assert run("regen", "regen", child)["parent"] == prompt

    shown = run("show", "show", child)
    assert shown["path"] == [root, prompt, child] and shown["node"]["meta"]["gen"]
    assert run("show", "show", "--messages", child)["messages"][-1]["role"] == "user"
    info = run("info", "info", child)
    assert info["depth"] == 2 and info["path"][-1] == child and "meta" in info["node"]
    listed = run("ls", "ls", prompt)
    assert listed["node"]["id"] == prompt and listed["nodes"][0]["id"] == child
    tree = run("tree", "tree")
    assert tree["roots"][0] == root and {n["id"] for n in tree["nodes"]} >= {root, prompt, child}
    found = run("search", "search", "sea")
    assert found["matches"][0]["node"]["id"] == prompt and found["matches"][0]["match"] == "sea"
    run("search", "search", "nowhere to be found", code=1)

    for verb, args in [
        ("goto", [child]),
        ("up", []),
        ("down", ["2"]),
        ("next", []),
        ("prev", []),
        ("root", []),
    ]:
        moved = run(verb, verb, *args)
        assert moved["cursor"] == moved["node"]["id"]
    run("goto", "goto", child)

    tokens = run("alts", "alts", child)["tokens"]
    at = run("alts", "alts", child, str(tokens[0]["offset"]))
    assert at["node"]["id"] == child and at["alternatives"]
    picked = run("alts", "alts", child, str(tokens[-1]["offset"]), "--pick", "1")
    assert picked["parent"] == prompt and picked["cursor"] == picked["node"]["id"]

    assert run("params", "params", child)["generation"]["model"] == "base"
    assert run("params", "params", "--explain", "-m", "base", child)["model"] == "base"
    assert run("params", "params", "--set", "temperature=0.5", child)["sticky"]
    run("presets", "presets")
    run("probe", "probe", "base", "--dry-run", "--max-tokens", "8")

    turn = run("say", "say", "-m", "chat", "-n", "1", "Hello?")
    assert turn["cursor"] == turn["nodes"][0]["id"]
    assert (
        run("reply", "reply", "-m", "chat", "-n", "1", turn["parent"])["parent"] == turn["parent"]
    )

    edited = run("edit", "edit", prompt, "--text", " and the tide")
    assert edited["new_version"] is True and edited["original"] == prompt
    version = edited["node"]["id"]
    run("edit", "edit", child, "--text", "in place")
    history = run("history", "history", child)["entries"]
    assert [e["kind"] for e in history] == ["earlier", "current"]
    assert run("history", "history", child, "--show", "0")["entry"]["index"] == 0
    assert run("history", "history", child, "--restore", "0")["node"]["id"] == child
    assert run("history", "history", prompt)["entries"][-1]["id"] == version

    tail = run("split", "split", version, "--at", "4")
    assert tail["parent"] == version
    assert run("merge", "merge", tail["node"]["id"])["node"]["id"] == version
    assert run("mv", "mv", version, "--root")["parent"] is None
    run("bookmark", "bookmark", version, "--title", "keep")
    assert [n["id"] for n in run("bookmark", "bookmark", "--list")["nodes"]] == [version]
    run("tag", "tag", "-n", version, "draft")
    assert run("tag", "tag", "--list")["tags"] == {"draft": [version]}
    run("note", "note", "-n", version, "remember")
    assert run("note", "note", "-n", version)["node"]["note"] == "remember"

    gone = run("rm", "rm", version)
    assert gone["node"]["archived"] is True and gone["node_count"] == 1
    run("restore", "restore", version)
    run("rm", "rm", version)
    assert run("purge", "purge", "--archived")["node_count"] == 1
    assert len(run("undo", "undo", "2")["changes"]) == 2
    assert len(run("redo", "redo")["changes"]) == 1
    log = run("log", "log")
    assert log["undo"] and len(log["redo"]) == 1

    exported = run("export", "export", "--format", "openloom")
    assert exported["scope"] == "forest" and exported["node"] is None and exported["content"]
    branch = run("export", "export", "--format", "text")
    assert branch["scope"] == "branch" and branch["node"]["id"] == branch["cursor"]
    out = tmp_path / "t.openloom.json"
    written = run("export", "export", root, "-o", str(out))
    assert written["scope"] == "subtree" and written["output"] == str(out)
    imported = run("import", "import", str(out), "--new", "back.loom.json")
    assert imported["node_count"] > 1 and imported["document"]["file"].endswith("back.loom.json")
    run("use", "use", "s.loom.json")
    (tmp_path / "notes.md").write_text("# Notes\n\nA paragraph.\n", encoding="utf-8")
    ingested = run("ingest", "ingest", "notes.md")
    assert ingested["sources"][0]["ids"]

    synced = run("sync", "sync", "draft.txt")
    assert synced["action"] == "write" and synced["document"]["title"] == "Tides"
    with_sync = run("gen", "gen", "--sync", "draft.txt", "-n", "1", "-m", "base")
    assert with_sync["sync"]["before"]["file"].endswith("draft.txt")
    assert run("sync", "sync", "draft.txt", "--forget")["forgotten"] is True

    kept = [{"text": "kept", "kind": "model", "meta": {}}]
    recovery.save(tmp_path / "s.loom.json", first["document"]["id"], None, "", kept)
    assert run("recover", "recover", "--list")["pending"][0]["node_count"] == 1
    assert [n["text"] for n in run("recover", "recover")["nodes"]] == ["kept"]

    run("models", "models")
    run("models add", "models", "add", "m2", "--provider", "openai", "--model", "x")
    assert run("models default", "models", "default", "m2")["model"]["name"] == "m2"
    run("models rm", "models", "rm", "base")
    run("guide", "guide")


def test_an_error_is_the_one_object_on_stdout_and_one_line_on_stderr(loom: Loom) -> None:
    failed(loom("show", "--json"), "no_document")
    loom.ok("new", "s.loom.json", "--text", "The sea")
    before = (loom.cwd / "s.loom.json").read_bytes()
    failed(loom("goto", "nowhere", "--json"), "not_found")
    failed(loom("--json", "add", "--no-such-flag", "x"), "usage", 2)
    failed(loom("bogus-command", "--json"), "usage", 2)
    failed(loom("show", "--fields", "id,colour"), "usage", 2)  # --fields alone means JSON
    failed(loom("add", "--from-file", "missing.txt", "--json"), "bad_input")
    assert (loom.cwd / "s.loom.json").read_bytes() == before
    plain = loom("goto", "nowhere")  # without --json: the line, and nothing on stdout
    assert plain.code == 1 and plain.stdout == "" and plain.stderr.startswith("loom: error: ")


def test_an_ambiguous_prefix_lists_the_candidates_in_details(loom: Loom) -> None:
    loom.ok("new", "s.loom.json")
    ids = [loom.ok("add", "--root", str(i)).stdout.strip() for i in range(40)]
    prefix = next(p for p in (i[:1] for i in ids) if sum(other.startswith(p) for other in ids) > 1)
    error = failed(loom("goto", prefix, "--json"), "ambiguous_id")["error"]
    assert all(c.startswith(prefix) for c in error["details"]["candidates"])


def test_fields_choose_what_every_node_object_carries(woven: Loom) -> None:
    env = woven.env  # type: ignore[attr-defined]
    made = valid(woven("gen", "-n", "2", "-m", "base", "--logprobs", "2", "--json", env=env), "gen")
    child = made["nodes"][0]["id"]
    assert set(made["nodes"][0]) == set(payloads.FIELD_SETS["brief"])  # a list: brief
    full = valid(woven("show", child, "--json"), "show")["node"]
    assert set(full) == set(payloads.NODE_FIELDS) and full["meta"]["logprobs"]["tokens"]

    ids = valid(woven("ls", "--fields", "id,text"), "ls")
    assert all(set(n) == {"id", "text"} for n in [ids["node"], *ids["nodes"]])
    gen_only = valid(woven("show", child, "--fields", "id,meta.gen"), "show")["node"]
    assert set(gen_only) == {"id", "meta"} and set(gen_only["meta"]) == {"gen"}
    whole = valid(woven("ls", "--fields", "all,full_text"), "ls")["nodes"]
    assert all(n["full_text"].startswith("Once upon a time") and "meta" in n for n in whole)
    both = valid(
        woven("--fields", "id", "show", child, "--fields", "text", "--fields", "kind"), "show"
    )
    assert set(both["node"]) == {"id", "text", "kind"}  # every --fields given counts
    brief = valid(woven("show", child, "--fields", "brief"), "show")["node"]
    assert "meta" not in brief and brief["id"] == child


def test_json_bytes_of_a_generated_list_shrink_with_brief_defaults(woven: Loom) -> None:
    """Three children with token probabilities: the brief list is a fraction of the full one."""
    env = woven.env  # type: ignore[attr-defined]
    woven.ok("gen", "-n", "3", "-m", "base", "--logprobs", "5", "--max-tokens", "24", env=env)
    brief = len(woven.ok("ls", "--json").stdout)
    full = len(woven.ok("ls", "--fields", "all").stdout)
    ids = len(woven.ok("ls", "--fields", "id").stdout)
    assert ids < brief < full / 3


def test_a_failed_generation_keeps_its_branches_in_the_error_details(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        Reply([" good"], finish_reason="stop"), Fail(400, message="bad request for claude")
    )
    env = woven.env  # type: ignore[attr-defined]
    result = woven("gen", "-m", "base", "-m", "claude", "-n", "1", "--json", env=env)
    error = failed(result, "backend")["error"]
    [kept] = error["details"]["nodes"]  # node objects, brief like every list
    assert kept["text"] == " good" and kept["parent"] and "meta" not in kept


def test_a_document_without_live_nodes_has_a_null_cursor(loom: Loom) -> None:
    loom.ok("new", "s.loom.json", "--text", "only")
    assert valid(loom("rm", "@", "--json"), "rm")["cursor"] is None
    assert valid(loom("info", "--json"), "info")["cursor"] is None
    [deleted] = valid(loom("tree", "--all", "--json"), "tree")["nodes"]  # deleted nodes are listed
    assert deleted["archived"] is True


@pytest.mark.parametrize(
    ("command", "args"),
    [("serve", ["-m", "base", "--port", "0"]), ("mcp", ["--http", "--port", "0"])],
)
def test_servers_announce_themselves_by_the_schema(
    woven: Loom, command: str, args: list[str]
) -> None:
    """`serve` and `mcp --http` print one answer when they listen, then run until stopped."""
    pytest.importorskip("uvicorn", reason="the serve and mcp extras are not installed")
    if command == "mcp":
        pytest.importorskip("mcp", reason="the mcp extra is not installed")
    proc = woven.start(command, *args, "--json", env=woven.env)  # type: ignore[attr-defined]
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        answer = valid(Result(0, line, ""), command)
        assert answer["url"].startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_tui_with_json_is_a_usage_error(loom: Loom) -> None:
    loom.ok("new", "s.loom.json")
    failed(loom("tui", "--json"), "usage", 2)
    assert validator("tui").is_valid(json.loads(loom("tui", "--json").stdout))


def test_fields_parse_sets_names_and_meta_keys() -> None:
    from loom.errors import UsageError

    assert payloads.Fields.parse("all") == payloads.ALL
    assert payloads.Fields.parse("text, id").names == ("id", "text")  # the canonical order
    assert payloads.Fields.parse("brief,full_text").names[-1] == "full_text"
    gen_only = payloads.Fields.parse("id,meta.gen,meta.logprobs")
    assert gen_only.names == ("id", "meta") and gen_only.meta_keys == ("gen", "logprobs")
    assert payloads.Fields.parse("meta,meta.gen").meta_keys is None  # all of meta wins
    for bad in ("", "id,", "meta.", "colour"):
        with pytest.raises(UsageError):
            payloads.Fields.parse(bad)


def test_node_objects_from_the_library() -> None:
    """What the MCP server and the TUI's tests build: the same objects as the CLI."""
    from loom import ops
    from loom.document import Document

    doc = Document.new()
    root = ops.add_child(doc, None, "The sea")
    leaf = ops.add_child(doc, root.id, " went out.", kind="model", meta={"gen": {"model": "m"}})
    assert payloads.node(leaf) == leaf.to_dict() and leaf.to_dict()["meta"]["gen"]
    [listed] = payloads.nodes(doc, [leaf.id])
    assert "meta" not in listed and listed["parent"] == root.id
    picked = payloads.node(leaf, payloads.Fields.parse("id,full_text,meta.gen"))
    assert picked == {
        "id": leaf.id,
        "meta": {"gen": {"model": "m"}},
        "full_text": "The sea went out.",
    }
    assert payloads.answer("ls", nodes=[listed])["ok"] is True
    error = payloads.error("not_found", "no node 'x' at https://u:sk-secret-123456789@h/")
    assert "sk-secret" not in error["error"]["message"] and "details" not in error["error"]


def _jq_examples() -> list[tuple[str, str, str]]:
    """(where, command, first key) of every `loom CMD … --json | jq '.key…'` example in the
    commands' help and in `loom guide`."""
    import re

    import click

    from loom.cli.main import cli

    texts = {"guide": (Path(payloads.__file__).parent / "data" / "guide.md").read_text()}
    with click.Context(cli) as ctx:
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            texts[f"loom {name} --help"] = (command.help or "") if command else ""
    # The nearest `loom CMD` before `--json | jq` (not one whose argument is `$(loom …)`).
    example = re.compile(r"loom ([a-z]+)\b[^|\n$(]*--json[^|\n]*\|\s*jq (?:-r )?'?\.([A-Za-z_]+)")
    return [(where, m[1], m[2]) for where, text in texts.items() for m in example.finditer(text)]


def test_jq_examples_read_keys_the_answers_have() -> None:
    """`loom ls --help` showed `jq '.children[]'` long after ls answered under `nodes`."""
    defs = payloads.schema()["$defs"]

    def keys(part: dict[str, Any]) -> set[str]:
        """Top-level keys an answer may have, through anyOf and $ref."""
        if "$ref" in part:
            return keys(defs[part["$ref"].rsplit("/", 1)[1]])
        found = set(part.get("properties", ()))
        for each in part.get("anyOf", ()):
            found |= keys(each)
        return found

    examples = _jq_examples()
    assert len(examples) >= 5, examples
    for where, command, key in examples:
        assert key in keys(defs[f"answer:{command}"]), f"{where}: {command} --json has no {key!r}"
