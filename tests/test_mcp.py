"""`loom mcp`: the server driven through the MCP SDK's own client, in process, over stdio
and over streamable HTTP; every tool, progress notifications, and paths outside the roots.
Every answer and every error is checked against the JSON Schema of the tool's CLI twin."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import loom
import loom as loom_api
from loom import ops, payloads

from conftest import KEY, Loom
from fakeprovider import FakeProvider, Reply

pytest.importorskip("mcp.server.mcpserver", reason="the mcp extra is not installed")

from mcp import Client, MCPError, StdioServerParameters

from loom.mcp.roots import Roots
from loom.mcp.server import build

Session = Callable[[Client], Awaitable[None]]


def run(root: Path, session: Session, *more_roots: Path) -> None:
    """Drive an in-process server over `root` with the SDK's client."""

    async def main() -> None:
        pool = loom.BackendPool()
        try:
            async with Client(build(Roots([root, *more_roots]), pool)) as client:
                await session(client)
        finally:
            await pool.aclose()

    asyncio.run(main())


# Each tool's CLI twin(s): its answer is the one `loom TWIN --json` prints.
TWINS = {
    "open_document": {"info", "new"},
    "show": {"show"},
    "children": {"ls"},
    "tree": {"tree"},
    "search": {"search"},
    "add": {"add"},
    "edit": {"edit"},
    "split": {"split"},
    "merge": {"merge"},
    "move": {"mv"},
    "archive": {"rm", "restore"},
    "navigate": {"goto", "up", "down", "next", "prev", "root"},
    "bookmark": {"bookmark"},
    "tag": {"tag"},
    "undo": {"undo"},
    "redo": {"redo"},
    "generate": {"gen"},
    "say": {"say"},
    "list_models": {"models"},
    "import_tree": {"import"},
    "export": {"export"},
}


@cache
def validator(command: str) -> Draft202012Validator:
    return Draft202012Validator(payloads.schema(command))


def by_schema(answer: Any, command: str) -> dict[str, Any]:
    """`answer` checked against the schema of `command`'s answers (which admits the error)."""
    assert isinstance(answer, dict)
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator(command).iter_errors(answer)
    ]
    assert not errors, f"{command}: {errors[:3]}\n{json.dumps(answer)[:2000]}"
    return answer


def answer_of(result: Any) -> dict[str, Any]:
    """The JSON object a tool result holds: its text, and the same as structured content."""
    assert len(result.content) == 1
    answer = json.loads(result.content[0].text)
    assert result.structured_content == answer
    return answer  # type: ignore[no-any-return]


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's successful answer: its CLI twin's --json answer, by that twin's schema."""
    result = await client.call_tool(tool, arguments)
    answer = answer_of(result)
    assert not result.is_error, answer
    assert answer["ok"] is True and answer["command"] in TWINS[tool], answer
    return by_schema(answer, answer["command"])


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    """A tool's failure: the contract's error object; returns `code: message`."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    error = by_schema(answer_of(result), min(TWINS[tool]))
    assert error["ok"] is False and "\n" not in error["error"]["message"]
    return f"{error['error']['code']}: {error['error']['message']}"


@pytest.fixture
def models(woven: Loom, monkeypatch: pytest.MonkeyPatch) -> Loom:
    """The fake provider's models (base, chat, claude), usable from this process."""
    monkeypatch.setenv("FAKE_KEY", KEY)
    return woven


def test_tools_are_listed_with_descriptions_for_an_agent(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) >= {
            "open_document", "show", "children", "tree", "add", "edit", "split", "merge",
            "move", "archive", "navigate", "bookmark", "tag", "search", "undo", "redo",
            "generate", "say", "list_models", "import_tree", "export",
        }  # fmt: skip
        assert set(tools) == set(TWINS)  # a new tool names its CLI twin here
        assert all(len(t.description or "") > 40 for t in tools.values())
        assert "file" in tools["generate"].input_schema["properties"]
        assert "ctx" not in tools["generate"].input_schema["properties"]
        assert client.instructions and "copy-on-write" in client.instructions

    run(tmp_path, session)


def test_tree_tools_change_the_document_as_the_library_does(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        opened = await call(client, "open_document", file="s.loom.json", create=True, text="Once")
        root = opened["cursor"]
        assert opened["command"] == "new" and opened["document"]["node_count"] == 1
        assert opened["document"]["file"] == str(tmp_path / "s.loom.json")
        a = (await call(client, "add", file="s.loom.json", text=" upon a time"))["node"]
        b = await call(client, "add", file="s.loom.json", text=" more", parent=root, move=False)
        assert b["cursor"] == a["id"] and b["parent"] == root  # move=false left the cursor
        reopened = await call(client, "open_document", file="s.loom.json")
        assert reopened["command"] == "info" and reopened["stats"]["live_node_count"] == 3
        shown = await call(client, "show", file="s.loom.json")
        assert shown["text"] == "Once upon a time" and shown["path"] == [root, a["id"]]
        assert "meta" in shown["node"]  # one node: every field, as the CLI gives it
        kids = await call(client, "children", file="s.loom.json", node=root)
        assert [k["id"] for k in kids["nodes"]] == [a["id"], b["node"]["id"]]
        assert all("meta" not in k for k in kids["nodes"])  # brief by default
        assert kids["node"]["id"] == root and kids["total"] == 2 and kids["next_offset"] is None
        page = await call(client, "children", file="s.loom.json", node=root, limit=1)
        assert [k["id"] for k in page["nodes"]] == [a["id"]] and page["next_offset"] == 1
        slim = await call(client, "children", file="s.loom.json", node=root, fields="id,text")
        assert slim["nodes"][0] == {"id": a["id"], "text": " upon a time"}
        window = await call(client, "tree", file="s.loom.json", node=root)
        assert window["roots"] == [root] and {n["id"] for n in window["nodes"]} >= {root, a["id"]}

        # Editing a node with children makes a version; their text is untouched.
        version = await call(client, "edit", file="s.loom.json", node=root, text="Twice")
        assert version["node"]["id"] != root and version["original"] == root
        assert version["new_version"] is True and version["changed"] is True
        assert (await call(client, "show", file="s.loom.json", node=a["id"]))[
            "text"
        ] == "Once upon a time"
        leaf = await call(client, "edit", file="s.loom.json", node=a["id"], text=" upon a day")
        assert leaf["node"]["id"] == a["id"] and leaf["new_version"] is False  # in place
        undone = await call(client, "undo", file="s.loom.json")
        assert [c["op"] for c in undone["changes"]] == ["edit"]
        assert (await call(client, "redo", file="s.loom.json"))["changes"]
        refusal = await refused(client, "undo", file="s.loom.json", steps=0)
        assert refusal.startswith("usage: undo takes a number of steps from 1"), refusal

        second = await call(client, "split", file="s.loom.json", node=a["id"], at=5)
        assert second["node"]["text"] == " a day" and second["parent"] == a["id"]
        merged = await call(client, "merge", file="s.loom.json", node=second["node"]["id"])
        assert merged["node"]["text"] == " upon a day"
        moved = await call(client, "move", file="s.loom.json", node=b["node"]["id"])
        assert moved["node"]["parent"] is None and moved["parent"] is None
        gone = await call(client, "archive", file="s.loom.json", node=b["node"]["id"])
        assert gone["command"] == "rm" and gone["node"]["archived"] is True
        assert gone["node_count"] == 1 and gone["purged"] is False
        back = await call(client, "archive", file="s.loom.json", node=b["node"]["id"], restore=True)
        assert back["command"] == "restore" and back["node"]["archived"] is False

        up = await call(
            client, "navigate", file="s.loom.json", to="up", node=a["id"], fields="brief,full_text"
        )
        assert up["command"] == "up" and up["cursor"] == root
        assert up["node"]["full_text"] == "Once" and "meta" not in up["node"]
        down = await call(client, "navigate", file="s.loom.json", to="down", index=0)
        assert down["cursor"] == a["id"] == down["node"]["id"]
        at_root = await call(client, "navigate", file="s.loom.json", to="root")
        assert at_root["cursor"] == root
        marked = await call(client, "bookmark", file="s.loom.json", node=a["id"], title="here")
        assert marked["node"]["bookmark"] == {"title": "here"} and marked["cursor"] == root
        tagged = await call(client, "tag", file="s.loom.json", node=a["id"], tags=["good", "x"])
        assert tagged["node"]["tags"] == ["good", "x"]
        untagged = await call(
            client, "tag", file="s.loom.json", node=a["id"], tags=["x"], remove=True
        )
        assert untagged["node"]["tags"] == ["good"]
        found = await call(client, "search", file="s.loom.json", pattern="upon")
        assert [m["node"]["id"] for m in found["matches"]] == [a["id"]]
        assert found["matches"][0]["match"] == "upon" and "meta" not in found["matches"][0]["node"]
        assert (await call(client, "search", file="s.loom.json", pattern="zzz"))["matches"] == []

        again = await refused(client, "open_document", file="s.loom.json", create=True)
        assert again.startswith("usage: ") and "already exists: open it without create" in again
        assert (await refused(client, "show", file="s.loom.json", node="zzzz")).startswith(
            "not_found: "
        )
        assert (await refused(client, "navigate", file="s.loom.json", to="sideways")).startswith(
            "usage: "
        )
        assert "unknown field 'nope'" in await refused(
            client, "show", file="s.loom.json", fields="id,nope"
        )
        assert (await refused(client, "show", file="notes.txt")).startswith("usage: ")

    run(tmp_path, session)
    # What the tools did is in the file, for any other loom to read.
    doc = loom.open(tmp_path / "s.loom.json")
    assert len(doc.roots) == 3  # the first root, its version, and the moved node
    assert any(n.bookmarked for n in doc.roots[0].children)


def test_answers_are_the_ones_the_cli_prints(loom: Loom) -> None:
    """The same document read through a tool and through its CLI twin: the same object."""
    loom.ok("new", "s.loom.json", "--text", "Once")
    root = loom.ok("add", " upon a time").stdout.strip()
    loom.ok("add", "--stay", " more")
    loom.ok("add", "--parent", root, " twice upon")
    mcp: dict[str, dict[str, Any]] = {}

    async def session(client: Client) -> None:
        mcp["info"] = await call(client, "open_document", file="s.loom.json")
        mcp["show"] = await call(client, "show", file="s.loom.json")
        mcp["ls"] = await call(client, "children", file="s.loom.json", node=root)
        mcp["tree"] = await call(client, "tree", file="s.loom.json", whole=True)
        mcp["search"] = await call(client, "search", file="s.loom.json", pattern="upon")
        mcp["export"] = await call(client, "export", file="s.loom.json", format="openloom")

    run(loom.cwd, session)
    cli = {
        "info": loom.ok("info", "--json"),
        "show": loom.ok("show", "--json"),
        "ls": loom.ok("ls", root, "--json"),
        "tree": loom.ok("tree", "--json"),
        "search": loom.ok("search", "upon", "--json"),
        "export": loom.ok("export", "--format", "openloom", "--json"),
    }
    for command, result in cli.items():
        assert mcp[command] == json.loads(result.stdout), command


def test_every_failure_is_the_contracts_error_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loom's errors, arguments the SDK rejects, an unknown tool and a crash alike."""

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug with /private/detail in it")

    async def session(client: Client) -> None:
        await call(client, "open_document", file="e.loom.json", create=True, text="x")
        missing = await refused(client, "show")
        assert missing == "usage: show: file: Field required"
        typed = await refused(client, "children", file="e.loom.json", limit="many")
        assert typed.startswith("usage: children: limit: ") and "integer" in typed
        unknown = await client.call_tool("weave", {})
        assert by_schema(answer_of(unknown), "show")["error"]["code"] == "usage"
        monkeypatch.setattr(ops, "add_child", crash)
        bug = await refused(client, "add", file="e.loom.json", text="y")
        assert bug == "internal: internal error in add: RuntimeError (please report it)"

    run(tmp_path, session)
    assert loom.open(tmp_path / "e.loom.json").cursor.full_text == "x"


def test_generate_streams_loom_events_as_progress(tmp_path: Path, models: Loom) -> None:
    events: list[dict[str, Any]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        events.append({"progress": value, **json.loads(message or "{}")})

    async def session(client: Client) -> None:
        await call(client, "open_document", file="g.loom.json", create=True, text="Once upon")
        result = await client.call_tool(
            "generate",
            {"file": "g.loom.json", "n": 3, "models": ["base"], "params": {"temperature": 0.5}},
            progress_callback=progress,
        )
        out = by_schema(answer_of(result), "gen")
        assert out["command"] == "gen" and out["cursor"] == out["parent"]
        assert len(out["nodes"]) == 3 and all(n["kind"] == "model" for n in out["nodes"])
        assert all("meta" not in n for n in out["nodes"])
        full = await call(client, "show", file="g.loom.json", node=out["nodes"][0]["id"])
        assert full["node"]["meta"]["gen"]["params"]["temperature"] == 0.5
        assert KEY not in json.dumps(full)

    run(tmp_path, session)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "planned" and kinds[-1] == "written"
    assert kinds.count("finished") == 3 and "text" in kinds
    assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
    texts = "".join(e["text"] for e in events if e["event"] == "text")
    assert texts  # the streamed tokens themselves reach the client


def test_a_failing_generation_is_one_error_line(
    tmp_path: Path, models: Loom, fake_provider: FakeProvider
) -> None:
    from fakeprovider import Fail

    async def session(client: Client) -> None:
        await call(client, "open_document", file="g.loom.json", create=True, text="x")
        fake_provider.script(Fail(401))
        message = await refused(client, "generate", file="g.loom.json", n=1, models=["base"])
        assert message.startswith("backend: ") and KEY not in message
        unknown = await refused(client, "generate", file="g.loom.json", models=["nope"])
        assert "unknown model 'nope'" in unknown

    run(tmp_path, session)


def test_say_replies_as_assistant_turns(
    tmp_path: Path, models: Loom, fake_provider: FakeProvider
) -> None:
    async def session(client: Client) -> None:
        await call(client, "open_document", file="c.loom.json", create=True)
        fake_provider.script(Reply(["Aye.", "Nay."]))
        out = await call(
            client, "say", file="c.loom.json", text="Keep the light?", n=2, models=["chat"]
        )
        assert sorted(n["text"] for n in out["nodes"]) == ["Aye.", "Nay."]
        assert {n["kind"] for n in out["nodes"]} == {"assistant"}
        assert out["command"] == "say" and out["cursor"] == out["nodes"][0]["id"]
        assert fake_provider.last.body["messages"][-1] == {
            "role": "user",
            "content": "Keep the light?",
        }

    run(tmp_path, session)


def test_models_are_listed_without_secrets(tmp_path: Path, models: Loom) -> None:
    async def session(client: Client) -> None:
        listed = await call(client, "list_models")
        names = {m["name"] for m in listed["models"]}
        assert {"base", "chat", "claude", "embedded"} <= names
        assert listed["default"] == "base"
        assert [m["name"] for m in listed["models"] if m["default"]] == ["base"]
        assert KEY not in json.dumps(listed)

    run(tmp_path, session)


def test_import_and_export_round_trip(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        first = await call(client, "open_document", file="a.loom.json", create=True, text="Root")
        await call(client, "add", file="a.loom.json", text=" and leaf")
        written = await call(client, "export", file="a.loom.json", format="openloom", out="a.json")
        assert written["output"] == str(tmp_path / "a.json") and written["bytes"] > 0
        assert written["scope"] == "forest" and written["node"] is None
        inline = await call(client, "export", file="a.loom.json", format="text")
        assert inline["content"] == "Root and leaf" and inline["scope"] == "branch"
        assert inline["node"]["id"] == inline["cursor"]
        imported = await call(
            client, "import_tree", file="b.loom.json", source="a.json", create=True
        )
        assert imported["format"] == "openloom" and imported["node_count"] == 2
        (root,) = imported["roots"]
        tops = await call(client, "children", file="b.loom.json", node=root)
        shown = await call(client, "show", file="b.loom.json", node=tops["nodes"][0]["id"])
        assert shown["text"] == "Root and leaf"
        grafted = await call(
            client, "import_tree", file="a.loom.json", source="a.json", parent=first["cursor"]
        )
        assert grafted["document"]["node_count"] == 4 and len(grafted["roots"]) == 1
        under = await call(client, "show", file="a.loom.json", node=grafted["roots"][0])
        assert under["path"][0] == first["cursor"]

        # An export never writes over the document, nor over another one unless told.
        itself = await refused(
            client, "export", file="a.loom.json", format="loom", out="a.loom.json"
        )
        assert itself.startswith("usage: ") and "document being exported" in itself
        other = await refused(
            client, "export", file="a.loom.json", format="loom", out="b.loom.json"
        )
        assert other.startswith("storage: ") and "force=true" in other
        replaced = await call(
            client, "export", file="a.loom.json", format="loom", out="b.loom.json", force=True
        )
        assert replaced["bytes"] > 0

    run(tmp_path, session)


def test_resources_for_documents_and_nodes(tmp_path: Path) -> None:
    (tmp_path / "deep").mkdir()

    async def session(client: Client) -> None:
        opened = await call(
            client, "open_document", file="deep/d.loom.json", create=True, text="Hi"
        )
        listed = await client.read_resource("loom://documents")
        assert json.loads(listed.contents[0].text)["documents"] == ["deep/d.loom.json"]  # type: ignore[union-attr]
        doc = await client.read_resource("loom://document/deep/d.loom.json")
        described = by_schema(json.loads(doc.contents[0].text), "info")  # type: ignore[union-attr]
        assert described["document"]["node_count"] == 1 and described["cursor"] == opened["cursor"]
        node = await client.read_resource(f"loom://node/{opened['cursor']}/deep/d.loom.json")
        assert json.loads(node.contents[0].text)["full_text"] == "Hi"  # type: ignore[union-attr]

    run(tmp_path, session)


# ---- confinement -----------------------------------------------------------------------------------


def test_paths_outside_the_roots_are_refused(tmp_path: Path) -> None:
    root, outside, other = tmp_path / "root", tmp_path / "outside", tmp_path / "other"
    for folder in (root, outside, other):
        folder.mkdir()
    loom.new(outside / "secret.loom.json")
    (outside / "notes.txt").write_text("private")
    (root / "link.loom.json").symlink_to(outside / "secret.loom.json")
    (root / "door").symlink_to(outside, target_is_directory=True)

    async def session(client: Client) -> None:
        for path in (
            "../outside/secret.loom.json",
            str(outside / "secret.loom.json"),
            "link.loom.json",
            "door/secret.loom.json",
            "door/new.loom.json",
            "sub/../../outside/secret.loom.json",
        ):
            message = await refused(client, "open_document", file=path)
            assert message.startswith("outside_roots: ") and str(root) in message, path
        assert "outside_roots" in await refused(
            client, "open_document", file="door/new.loom.json", create=True
        )
        await call(client, "open_document", file="mine.loom.json", create=True, text="x")
        assert "outside_roots" in await refused(
            client, "export", file="mine.loom.json", format="text", out="../outside/leak.txt"
        )
        assert "outside_roots" in await refused(
            client, "import_tree", file="mine.loom.json", source="door/notes.txt"
        )
        with pytest.raises(MCPError, match="outside the directories"):
            await client.read_resource("loom://document/door/secret.loom.json")
        # A second root is usable; a path into it is fine.
        await call(client, "open_document", file=str(other / "o.loom.json"), create=True)

    run(root, session, other)
    assert not (outside / "new.loom.json").exists() and not (outside / "leak.txt").exists()
    assert not (root / "mine.loom.json").is_symlink()


# ---- transports ----------------------------------------------------------------------------------


def test_stdio_transport(loom: Loom) -> None:
    """The real `loom mcp` process over stdio, confined to its --root."""
    root = loom.cwd / "root"
    root.mkdir()

    async def main() -> None:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "loom", "mcp", "--root", str(root)],
            env={**os.environ},
            cwd=str(loom.cwd),
        )
        async with Client(params) as client:
            opened = await call(client, "open_document", file="s.loom.json", create=True, text="A")
            added = await call(client, "add", file="s.loom.json", text=" B")
            assert added["cursor"] == added["node"]["id"] != opened["cursor"]
            assert "outside_roots" in await refused(client, "show", file="../s.loom.json")

    asyncio.run(main())
    assert loom_api.open(root / "s.loom.json").cursor.full_text == "A B"


def test_streamable_http_transport(loom: Loom) -> None:
    proc = loom.start("mcp", "--http", "--port", "0", "--json")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode() if proc.stderr else ""
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:") and info["url"].endswith("/mcp")

        async def main() -> None:
            async with Client(info["url"]) as client:
                await call(client, "open_document", file="h.loom.json", create=True, text="Hi")
                shown = await call(client, "show", file="h.loom.json")
                assert shown["text"] == "Hi"

        asyncio.run(main())
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    assert code == 0
    assert (loom.cwd / "h.loom.json").exists()


def test_bad_mcp_options_are_one_line(loom: Loom) -> None:
    result = loom("mcp", "--root", "no-such-dir")
    assert (
        result.code == 2 and result.stderr.count("\n") == 1 and "not a directory" in result.stderr
    )


# ---- the agent scenario --------------------------------------------------------------------------


@pytest.mark.model
def test_agent_scenario_on_the_embedded_model(tmp_path: Path, model_path: Path) -> None:
    """Create a document, add a prompt, generate three branches on the embedded model, pick
    one by a rule on its text, edit it copy-on-write, bookmark it, export it to OpenLoom."""
    models_toml = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models_toml.write_text(
        f'default = "gemma"\n[models.gemma]\nprovider = "embedded"\nmodel = "gemma-3-270m"\n'
        f'[models.gemma.options]\nmodel_path = "{model_path}"\n'
    )

    async def session(client: Client) -> None:
        await call(client, "open_document", file="story.loom.json", create=True)
        prompt = await call(client, "add", file="story.loom.json", text="The lighthouse keeper")
        made = await call(
            client, "generate", file="story.loom.json", n=3, params={"max_tokens": 12, "seed": 4}
        )
        assert len(made["nodes"]) == 3 and made["parent"] == prompt["node"]["id"]
        pick = max(made["nodes"], key=lambda n: (len(n["text"].split()), n["id"]))
        # Grow the pick, then edit it: it has a child now, so the edit is a new version.
        await call(
            client, "add", file="story.loom.json", text=" Then night fell.", parent=pick["id"]
        )
        edited = await call(
            client, "edit", file="story.loom.json", node=pick["id"], text=pick["text"] + " (kept)"
        )
        assert edited["original"] == pick["id"] and edited["new_version"] is True
        assert edited["node"]["id"] != pick["id"]
        original = await call(client, "show", file="story.loom.json", node=pick["id"])
        assert original["node"]["text"] == pick["text"]  # copy-on-write: the old text stays
        await call(
            client, "bookmark", file="story.loom.json", node=edited["node"]["id"], title="pick"
        )
        out = await call(
            client, "export", file="story.loom.json", format="openloom", out="story.json"
        )
        assert out["bytes"] > 0 and out["output"] == str(tmp_path / "story.json")

    run(tmp_path, session)
    exported = json.loads((tmp_path / "story.json").read_text())
    texts = json.dumps(exported)
    assert "The lighthouse keeper" in texts and "(kept)" in texts
