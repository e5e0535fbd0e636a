"""Secret-looking fields (API keys, tokens, passwords) in foreign files never reach a document.

Importers keep the fields loom has no place for; whatever an importer keeps, keys
that look like credentials are dropped at any depth, with one note giving their count.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from interop_support import build_basemode_db, cli, write_json
from loom import formats, redact, store
from loom.document import Document
from loom.errors import LoomError
from loom.formats.forest import ImportedForest, ImportedNode, graft
from loom.formats.secrets import drop_secrets, secret_key

MARK = "SECRET"  # every secret value below contains it; nothing else does

OPENLOOM: dict[str, Any] = {
    "title": "Keys",
    "rootNodeId": "A",
    "currentNodeId": "B",
    "nodes": {
        "A": {
            "id": "A",
            "text": "Hello",
            "author": "user",
            "childrenIds": ["B"],
            "apiKey": "sk-OPENLOOM-NODE-SECRET",
            "extra": {"headers": {"Authorization": "Bearer OPENLOOM-SECRET"}, "keep": "visible-1"},
        },
        "B": {
            "id": "B",
            "text": " world",
            "author": "assistant",
            "parentId": "A",
            "childrenIds": [],
            "modelId": "gpt-4o",
            "settings": [{"openaiKey": "OPENLOOM-LIST-SECRET", "temperature": 0.7}],
        },
    },
    "providers": {"openai": {"api_key": "OPENLOOM-DOC-SECRET", "baseURL": "https://x.test"}},
    "password": "OPENLOOM-PW-SECRET",
}
PYLOOM: dict[str, Any] = {
    "root": {
        "id": "r",
        "text": "Once",
        "custom": {"nested": [{"secretKey": "PYLOOM-NODE-SECRET", "colour": "visible-2"}]},
        "children": [
            {
                "id": "c",
                "text": " upon",
                "children": [],
                "meta": {
                    "source": "AI",
                    "session": {"token": "PYLOOM-META-SECRET", "user": "visible-3"},
                    "generation": {
                        "model": "davinci",
                        "prompt": "Once",
                        "finish_reason": "stop",
                        "api_key": "PYLOOM-OLDGEN-SECRET",
                    },
                },
            }
        ],
    },
    "generation_settings": {"model": "davinci", "temperature": 0.9, "OPENAI_API_KEY": "PY-SECRET"},
    "frame": {"generation_settings": {"auth": "PYLOOM-FRAME-SECRET"}},
    "tags": {"bookmark": {"scope": "node", "toggle_key": "b"}},
}
BONSAI: dict[str, Any] = {
    "name": "Keys",
    "nodes": [
        {
            "id": "n1",
            "text": "A tree",
            "childrenIds": ["n2"],
            "parentIds": [],
            "generationSettings": {
                "model": "m",
                "provider": "openai",
                "temperature": 1.0,
                "openaiKey": "BONSAI-PARAM-SECRET",
                "headers": {"X-Api-Key": "BONSAI-HEADER-SECRET", "Accept": "visible-4"},
            },
        },
        {
            "id": "n2",
            "text": " grew.",
            "childrenIds": [],
            "parentIds": ["n1"],
            "custom": {"accessToken": "BONSAI-NODE-SECRET"},
        },
    ],
    "settings": {"apiKey": "BONSAI-DOC-SECRET", "theme": "visible-5"},
}
BASEMODE: dict[str, Any] = {
    "version": 1,
    "nodes": [
        {
            "id": "r",
            "parent_id": None,
            "root_id": "r",
            "text": "Root",
            "provider_token": "BASEMODE-COLUMN-SECRET",
            "metadata": {"bookmarked": False, "auth": {"password": "BASEMODE-META-SECRET"}},
        },
        {
            "id": "c",
            "parent_id": "r",
            "root_id": "r",
            "text": " child",
            "model": "m",
            "metadata": {"rating": 1, "name_hint": "visible-6"},
        },
    ],
    "trees": [
        {
            "id": "r",
            "name": "Keys",
            "current_node_id": "c",
            "metadata": {"api_key": "BASEMODE-TREE-SECRET"},
            "model_plan": [{"model": "m", "apiKey": "BASEMODE-PLAN-SECRET"}],
        }
    ],
    "app_settings": {"openrouter_key": "BASEMODE-DOC-SECRET"},
}
# (file content, the format it must be read as, secret fields, values that must survive)
CASES = {
    "openloom": (OPENLOOM, 5, ["visible-1", "https://x.test"]),
    "pyloom": (PYLOOM, 5, ["visible-2", "visible-3", "toggle_key"]),
    "bonsai": (BONSAI, 4, ["visible-4", "visible-5"]),
    "basemode": (BASEMODE, 5, ["visible-6"]),
}


def _exports(doc: Document) -> dict[str, bytes]:
    """Every export format of `doc`; one-tree formats get the first root."""
    out: dict[str, bytes] = {}
    for fmt in formats.EXPORT_FORMATS:
        try:
            out[fmt] = formats.export(doc, fmt)
        except LoomError:
            out[fmt] = formats.export(doc, fmt, doc.root_ids[0])
    return out


def _note(forest: ImportedForest) -> str:
    return next(n for n in forest.notes if "secret-looking" in n)


@pytest.mark.parametrize("fmt", list(CASES))
def test_imports_drop_secret_fields_everywhere(tmp_path: Path, fmt: str) -> None:
    data, count, kept = CASES[fmt]
    source = write_json(tmp_path / f"{fmt}.json", data)
    forest = formats.read(source)
    assert forest.format == fmt
    assert _note(forest).startswith(f"{count} secret-looking field(s)")
    assert MARK not in " ".join(forest.notes)
    doc = Document.new()
    graft(doc, forest)
    path = tmp_path / f"{fmt}.loom.json"
    store.create(path, doc)
    saved = path.read_text(encoding="utf-8")
    assert MARK not in saved
    for value in kept:
        assert value in saved, value
    for name, payload in _exports(doc).items():
        assert MARK.encode() not in payload, name
    # The import header and every node's meta.import hold no secret-looking key.
    stored = json.loads(saved)
    assert drop_secrets(stored.get("import", {}))[1] == 0
    for rec in stored["nodes"].values():
        assert drop_secrets(rec.get("meta", {}))[1] == 0


def test_basemode_store_drops_secrets_in_json_columns(tmp_path: Path) -> None:
    db = build_basemode_db(tmp_path / "store.db")
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "UPDATE trees SET metadata_json = ? WHERE id = 't1root'",
            (json.dumps({"source": "cli", "providers": [{"api_key": "DB-TREE-SECRET"}]}),),
        )
        conn.execute(
            "UPDATE nodes SET metadata_json = ? WHERE id = 't1c'",
            (json.dumps({"rating": 2, "client_secret": "DB-NODE-SECRET"}),),
        )
        conn.commit()
    finally:
        conn.close()
    forest = formats.read(db)
    assert _note(forest).startswith("2 secret-looking field(s)")
    doc = Document.new()
    graft(doc, forest)
    assert MARK not in store.encode(doc).decode("utf-8")
    assert all(MARK.encode() not in p for p in _exports(doc).values())


def test_cli_import_notes_the_count_and_never_prints_values(tmp_path: Path) -> None:
    write_json(tmp_path / "chat.json", OPENLOOM)
    result = cli(tmp_path, "import", "chat.json", "--new", "c.loom.json")
    assert result.code == 0, result.stderr
    assert "loom: note: 5 secret-looking field(s)" in result.stderr
    assert MARK not in result.stdout + result.stderr
    report = cli(tmp_path, "import", "chat.json", "--new", "d.loom.json", "--json").json()
    assert any(n.startswith("5 secret-looking") for n in report["notes"])
    for name in ("c.loom.json", "d.loom.json"):
        assert MARK not in (tmp_path / name).read_text(encoding="utf-8")
    for fmt in ("openloom", "jsonl", "html"):
        exported = cli(tmp_path, "-f", "c.loom.json", "export", "--format", fmt, "-o", f"o.{fmt}")
        assert exported.code == 0, exported.stderr
        assert MARK not in (tmp_path / f"o.{fmt}").read_text(encoding="utf-8")


def test_graft_drops_secrets_from_a_forest_built_in_code() -> None:
    forest = ImportedForest("openloom", source="code")
    node = ImportedNode("a", text="x")
    node.fields = {"deep": [[{"Authorization": "GRAFT-SECRET"}]], "ok": 1}
    node.meta = {"gen": {"model": "m", "params": {"api_key": "GRAFT-PARAM-SECRET", "top_p": 1}}}
    forest.nodes["a"] = node
    forest.roots = ["a"]
    forest.fields = {"token": "GRAFT-DOC-SECRET", "name": "kept"}
    doc = Document.new()
    graft(doc, forest)
    assert forest.notes == ["3 secret-looking field(s) (API keys, tokens, passwords) were dropped"]
    saved = store.encode(doc).decode("utf-8")
    assert MARK not in saved and '"top_p"' in saved and '"kept"' in saved


def test_exports_drop_secrets_a_document_saved_by_an_older_loom_kept(tmp_path: Path) -> None:
    doc = Document.new()
    graft(doc, formats.read(write_json(tmp_path / "chat.json", OPENLOOM)))
    # As an import before secrets were dropped would have stored them.
    for rec in doc.nodes.values():
        rec["meta"]["import"].setdefault("fields", {})["apiKey"] = "OLD-NODE-SECRET"
    doc.data["import"]["openloom"][0]["fields"]["password"] = "OLD-DOC-SECRET"
    for fmt in ("openloom", "pyloom", "basemode", "loomsidian"):
        payload = formats.export(doc, fmt, doc.root_ids[0])
        assert MARK.encode() not in payload, fmt


def test_which_keys_are_secrets() -> None:
    secret = [
        "apiKey",
        "api_key",
        "API-KEY",
        "OPENAI_API_KEY",
        "openaiKey",
        "apiKeys",
        "key",
        "token",
        "accessToken",
        "refresh_token",
        "secret",
        "client_secret",
        "password",
        "Password",
        "authorization",
        "Authorization",
        "auth",
        "X-Auth-Token",
        "credentials",
        "apiKeyOpenAI",
        "openai_api_key_v2",
        "bearer",
        "BearerToken",
    ]
    ordinary = [
        "tokens",
        "max_tokens",
        "maxTokens",
        "token_logprobs",
        "completion_tokens",
        "generatedToken",
        "toggle_key",
        "author",
        "authorName",
        "monkey",
        "model",
        "temperature",
        "keep",
        "keywords",
    ]
    assert [k for k in secret if not secret_key(k)] == []
    assert [k for k in ordinary if secret_key(k)] == []
    # A generated token beside its logprob is data, not a credential.
    value = {"content": [{"token": "Hi", "logprob": -0.1}], "auth": {"token": "T"}}
    assert drop_secrets(value) == ({"content": [{"token": "Hi", "logprob": -0.1}]}, 1)
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(50_000):  # imported trees can nest very deeply; no recursion
        cursor["next"] = {}
        cursor = cursor["next"]
    cursor["password"] = "x"
    assert drop_secrets(deep)[1] == 1


# ---- secrets recognised by their value, whatever the key is called -----------------------------

OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWxYz12345SECRETab"
ANTHROPIC_KEY = "sk-ant-api03-Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2cBa1SECRET-xyzAA"
BEARER = "eyJhbGciOiJIUzI1NiJ9.SECRETpayload123.sig-nature_456"
SHAPED: dict[str, Any] = {
    "root": {
        "id": "r",
        "text": "Once",
        "children": [{"id": "c", "text": " upon", "children": [], "keys": {"openai": OPENAI_KEY}}],
        "settings": {"apiKeyOpenAI": "plain-SECRET-1", "openai_api_key_v2": "plain-SECRET-2"},
    },
    "keys": {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY},
    "bearer": "SECRET-bearer-value",
    "headers": {"X-Custom": f"Authorization: Bearer {BEARER}", "Accept": "text/plain"},
    "base_url": f"https://user:{OPENAI_KEY}@api.example.test/v1",
    "proxy": "https://someone:hunter2-SECRET@proxy.example.test:8080/",
    "endpoint": "https://api.example.test/v1?api_key=qSECRETq&page=2",
    "notes_field": "the bearer of bad news asked me to sk-ip the task-management-overview-for-2024",
}


def test_secrets_are_found_by_their_shape_under_any_key(tmp_path: Path) -> None:
    """Key names a list cannot guess (keys: {openai: …}, base_url with a password) still go."""
    source = write_json(tmp_path / "shaped.json", SHAPED)
    result = cli(tmp_path, "import", str(source), "--new", "s.loom.json", "--json")
    assert result.code == 0, result.stderr
    assert MARK not in result.stdout + result.stderr
    saved = (tmp_path / "s.loom.json").read_text(encoding="utf-8")
    assert MARK not in saved
    # What is not a credential survives: the host of a URL, ordinary query values, prose.
    for kept in (
        "https://***@api.example.test/v1",
        "https://***@proxy.example.test:8080/",
        "api_key=***&page=2",
        "Authorization: Bearer ***",
        SHAPED["notes_field"],
        "text/plain",
    ):
        assert kept in saved, kept
    doc = store.load(tmp_path / "s.loom.json")
    for name, payload in _exports(doc).items():
        assert MARK.encode() not in payload, name
    for fmt in ("jsonl", "loom", "pyloom", "html"):
        exported = cli(tmp_path, "-f", "s.loom.json", "export", "--format", fmt)
        assert exported.code == 0 and MARK not in exported.stdout, fmt


def test_what_looks_like_a_secret_value() -> None:
    secret = [
        OPENAI_KEY,
        ANTHROPIC_KEY,
        "sk-" + "a1" * 24,
        f"Bearer {BEARER}",
        f"Authorization: Bearer {BEARER}",
        "https://u:p4ss@host.test/v1",
        "hf_" + "A" * 34,
        "AIza" + "b" * 35,
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "https://h.test/?key=abc&x=1",
        f"my key is {OPENAI_KEY}, keep it safe",
    ]
    ordinary = [
        "The bearer of bad news arrived at dawn.",
        "Bearer bonds were popular in 1920.",
        "ask-me-anything-about-the-sea-and-its-tides",
        "sk-learn is a library",
        "https://example.com/path?page=2&sort=new",
        "https://git@example.com/repo",
        "user@example.com",
        "risk-assessment-framework-for-everyone",
        "token",
        "a tokenizer splits text",
    ]
    assert [s for s in secret if not redact.has_secret(s)] == []
    assert [s for s in ordinary if redact.has_secret(s)] == []
    assert redact.mask_secrets(f"key={OPENAI_KEY}.") == "key=***."
    assert redact.mask_secrets("https://u:p@h.test/x") == "https://***@h.test/x"
