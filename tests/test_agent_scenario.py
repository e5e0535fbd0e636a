"""The proof of issue 11's contract: an agent that knows loom only from `loom --help`,
`loom guide` and the `--json` answers weaves a document end to end on the embedded model.

The agent reads what it is about to use in the help and the guide first (so the test
fails if they stop saying it), then takes every id and fact from the JSON answers: it
never reads loom's source, the library, or the document file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import Loom

pytestmark = pytest.mark.model


class Agent:
    """Runs loom the way a coding agent does: a shell command, stdout parsed as JSON."""

    def __init__(self, loom: Loom) -> None:
        self.loom = loom
        self.read: list[str] = []  # everything it learned loom from

    def learn(self, *args: str) -> str:
        text = self.loom.ok(*args).stdout
        self.read.append(text)
        return text

    def knows(self, pattern: str) -> None:
        """What the agent is about to rely on must be written in what it read."""
        assert any(re.search(pattern, text) for text in self.read), f"undocumented: {pattern}"

    def json(self, *args: str) -> dict[str, Any]:
        result = self.loom(*args, "--json")
        answer: dict[str, Any] = json.loads(result.stdout)  # stdout holds the answer, always
        assert answer["ok"] is True and result.code == 0, answer
        return answer


def test_an_agent_weaves_with_only_help_guide_and_json(loom: Loom, model_path: Path) -> None:
    # The operator's setup: the embedded model, kept once per test session.
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        '[models.embedded]\nprovider = "embedded"\nmodel = "gemma-3-270m"\n'
        f'[models.embedded.options]\nmodel_path = "{model_path}"\n'
    )
    agent = Agent(loom)
    agent.learn("--help")
    agent.learn("guide")
    agent.knows(r"--json")
    agent.knows(r"exactly one JSON object on\s+stdout")

    # The default model: is it the embedded one, and usable?
    agent.knows(r"loom models")
    listed = agent.json("models")
    embedded = next(m for m in listed["models"] if m["name"] == listed["default"])
    assert embedded["provider"] == "embedded" and embedded["usable"]
    agent.knows(r"loom gen \[-n N\] \[-m MODEL\]")

    # 1. A document with a prompt.
    agent.knows(r"loom new FILE \[--text T\]")
    agent.knows(r"loom add TEXT")
    created = agent.json("new", "keeper.loom.json", "--text", "The lighthouse keeper")
    root = created["cursor"]
    prompt = agent.json("add", " climbed the stairs and saw")
    agent.knows(r"`parent` is the id of the node a command added children to")
    assert prompt["parent"] == root and prompt["cursor"] == prompt["node"]["id"]
    prompt_id = prompt["node"]["id"]

    # 2. Three branches on the embedded model.
    made = agent.json("gen", "-n", "3", "-m", embedded["name"], "--max-tokens", "12")
    assert made["parent"] == prompt_id and len(made["nodes"]) == 3
    assert all(n["parent"] == prompt_id and n["kind"] == "model" for n in made["nodes"])

    # 3. Pick one by a rule on its text: the most letters (the first of equals).
    def letters(node: dict[str, Any]) -> int:
        return sum(ch.isalpha() for ch in node["text"])

    pick = max(made["nodes"], key=letters)
    agent.knows(r"loom goto NODE")
    moved = agent.json("goto", pick["id"])
    assert moved["cursor"] == pick["id"] == moved["node"]["id"]

    # 4. Edit it, copy-on-write: it gets a child first, so the edit must not rewrite
    #    the text that child continues.
    agent.knows(r"copy-on-write|Copy-on-write")
    follow = agent.json("add", " Then the lamp went out.")
    assert follow["parent"] == pick["id"]
    agent.knows(r"loom edit \[NODE\] --text T")
    agent.knows(r"`new_version`")
    edited = agent.json("edit", pick["id"], "--text", " the sea, calm and grey.")
    assert edited["new_version"] is True and edited["original"] == pick["id"]
    version = edited["node"]
    assert version["id"] != pick["id"] and version["parent"] == prompt_id
    assert version["text"] == " the sea, calm and grey." and version["children"] == []
    kept = agent.json("ls", pick["id"])
    assert [n["id"] for n in kept["nodes"]] == [follow["node"]["id"]]  # stayed with the old
    assert agent.json("show", pick["id"])["node"]["text"] == pick["text"]
    shown = agent.json("show", version["id"])
    assert (
        shown["text"] == "The lighthouse keeper climbed the stairs and saw the sea, calm and grey."
    )

    # 5. Bookmark the new version.
    agent.knows(r"loom bookmark \[NODE\] \[--title T\]")
    marked = agent.json("bookmark", version["id"], "--title", "calm sea")
    assert marked["node"]["bookmark"] == {"title": "calm sea"}

    # 6. Export its branch to OpenLoom.
    agent.knows(r"loom export --format F")
    agent.learn("export", "--help")
    agent.knows(r"openloom")
    out = loom.cwd / "calm.openloom.json"
    exported = agent.json("export", "--format", "openloom", version["id"], "-o", str(out))
    assert exported["output"] == str(out) and exported["node"]["id"] == version["id"]
    openloom = json.loads(out.read_text(encoding="utf-8"))  # the agent's own output file
    texts = {n["text"]: n for n in openloom["nodes"].values()}
    assert texts[" the sea, calm and grey."]["isBookmarked"] is True
    assert texts[" the sea, calm and grey."]["bookmarkTitle"] == "calm sea"
    assert {"The lighthouse keeper", " climbed the stairs and saw"} <= set(texts)
