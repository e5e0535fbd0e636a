"""`loom mcp`: the server driven through the MCP SDK's own client, in process, over stdio
and over streamable HTTP; every tool, progress notifications, and paths outside the roots."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import loom
import loom as loom_api

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


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    return str(result.content[0].text)  # type: ignore[union-attr]


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
        assert all(len(t.description or "") > 40 for t in tools.values())
        assert "file" in tools["generate"].input_schema["properties"]
        assert "ctx" not in tools["generate"].input_schema["properties"]
        assert client.instructions and "copy-on-write" in client.instructions

    run(tmp_path, session)


def test_tree_tools_change_the_document_as_the_library_does(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        opened = await call(client, "open_document", file="s.loom.json", create=True, text="Once")
        root = opened["node"]["id"]
        assert opened["cursor"] == root and opened["document"]["nodes"] == 1
        a = (await call(client, "add", file="s.loom.json", text=" upon a time"))["node"]
        b = await call(client, "add", file="s.loom.json", text=" more", parent=root, move=False)
        assert b["cursor"] == a["id"]  # move=false left the cursor where it was
        shown = await call(client, "show", file="s.loom.json")
        assert shown["node"]["full_text"] == "Once upon a time" and shown["path"] == [root, a["id"]]
        kids = await call(client, "children", file="s.loom.json", node=root)
        assert [k["id"] for k in kids["nodes"]] == [a["id"], b["node"]["id"]]
        assert all("meta" not in k for k in kids["nodes"])  # brief by default
        rows = (await call(client, "tree", file="s.loom.json", node=root))["rows"]
        assert {r["node"]["id"] for r in rows} >= {root, a["id"]}

        # Editing a node with children makes a version; their text is untouched.
        version = await call(client, "edit", file="s.loom.json", node=root, text="Twice")
        assert version["node"]["id"] != root and version["version_of"] == root
        assert (await call(client, "show", file="s.loom.json", node=a["id"]))["node"][
            "full_text"
        ] == "Once upon a time"
        leaf = await call(client, "edit", file="s.loom.json", node=a["id"], text=" upon a day")
        assert leaf["node"]["id"] == a["id"]  # a leaf changes in place, history kept
        assert (await call(client, "undo", file="s.loom.json"))["undone"]
        assert (await call(client, "redo", file="s.loom.json"))["redone"]

        second = await call(client, "split", file="s.loom.json", node=a["id"], at=5)
        assert second["node"]["text"] == " a day"
        merged = await call(client, "merge", file="s.loom.json", node=second["node"]["id"])
        assert merged["node"]["text"] == " upon a day"
        moved = await call(client, "move", file="s.loom.json", node=b["node"]["id"])
        assert moved["node"]["parent"] is None
        gone = await call(client, "archive", file="s.loom.json", node=b["node"]["id"])
        assert gone["node"]["archived"] is True
        back = await call(client, "archive", file="s.loom.json", node=b["node"]["id"], restore=True)
        assert back["node"]["archived"] is False

        up = await call(client, "navigate", file="s.loom.json", to="up", node=a["id"])
        assert up["cursor"] == root and up["node"]["full_text"] == "Once"
        down = await call(client, "navigate", file="s.loom.json", to="down", index=0)
        assert down["cursor"] == a["id"]
        at_root = await call(client, "navigate", file="s.loom.json", to="root")
        assert at_root["cursor"] == root
        marked = await call(client, "bookmark", file="s.loom.json", node=a["id"], title="here")
        assert marked["node"]["bookmark"]
        tagged = await call(client, "tag", file="s.loom.json", node=a["id"], tags=["good", "x"])
        assert tagged["node"]["tags"] == ["good", "x"]
        untagged = await call(
            client, "tag", file="s.loom.json", node=a["id"], tags=["x"], remove=True
        )
        assert untagged["node"]["tags"] == ["good"]
        found = await call(client, "search", file="s.loom.json", pattern="upon")
        assert [m["node"] for m in found["matches"]] == [a["id"]]

        again = await refused(client, "open_document", file="s.loom.json", create=True)
        assert "already exists: open it without create" in again
        bad = await refused(client, "show", file="s.loom.json", node="zzzz")
        assert "not_found" in bad
        assert "usage" in await refused(client, "navigate", file="s.loom.json", to="sideways")

    run(tmp_path, session)
    # What the tools did is in the file, for any other loom to read.
    doc = loom.open(tmp_path / "s.loom.json")
    assert len(doc.roots) == 3  # the first root, its version, and the moved node
    assert any(n.bookmarked for n in doc.roots[0].children)


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
        out = json.loads(result.content[0].text)  # type: ignore[union-attr]
        assert len(out["nodes"]) == 3 and all(n["kind"] == "model" for n in out["nodes"])
        assert all("meta" not in n for n in out["nodes"])
        full = await call(
            client, "show", file="g.loom.json", node=out["nodes"][0]["id"], brief=False
        )
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
        assert "backend" in message and "\n" not in message and KEY not in message
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
        assert out["cursor"] == out["nodes"][0]["id"]
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
        assert KEY not in json.dumps(listed)

    run(tmp_path, session)


def test_import_and_export_round_trip(tmp_path: Path) -> None:
    async def session(client: Client) -> None:
        await call(client, "open_document", file="a.loom.json", create=True, text="Root")
        await call(client, "add", file="a.loom.json", text=" and leaf")
        written = await call(client, "export", file="a.loom.json", format="openloom", out="a.json")
        assert written["out"] == "a.json" and written["bytes"] > 0
        inline = await call(client, "export", file="a.loom.json", format="text")
        assert inline["content"] == "Root and leaf"
        imported = await call(
            client, "import_tree", file="b.loom.json", source="a.json", create=True
        )
        (root,) = imported["nodes"]
        shown = await call(client, "show", file="b.loom.json", node=root["children"][0])
        assert shown["node"]["full_text"] == "Root and leaf"

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
        assert json.loads(doc.contents[0].text)["document"]["nodes"] == 1  # type: ignore[union-attr]
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
            assert "outside_roots" in message and str(root) in message, path
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
                assert shown["node"]["full_text"] == "Hi"

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
        assert edited["version_of"] == pick["id"] and edited["node"]["id"] != pick["id"]
        original = await call(client, "show", file="story.loom.json", node=pick["id"])
        assert original["node"]["text"] == pick["text"]  # copy-on-write: the old text stays
        await call(
            client, "bookmark", file="story.loom.json", node=edited["node"]["id"], title="pick"
        )
        out = await call(
            client, "export", file="story.loom.json", format="openloom", out="story.json"
        )
        assert out["bytes"] > 0

    run(tmp_path, session)
    exported = json.loads((tmp_path / "story.json").read_text())
    texts = json.dumps(exported)
    assert "The lighthouse keeper" in texts and "(kept)" in texts
