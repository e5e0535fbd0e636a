"""The JSON answers of every front end: one contract for `loom … --json`, the MCP server
and the TUI's tests. The schema is the reference (`loom schema`, shipped in
loom/data/schema/); the README's "Output for programs" explains it.

An answer is one object: `{"ok": true, "command": NAME, …}`, or on failure
`{"ok": false, "error": {"code", "message", "details"?}}` (`answer`, `error`). Inside:

- `node` is always one node object and `nodes` always a list of them (`node`, `nodes`);
  a node object has the fields of NODE_FIELDS, fewer when `Fields` says so. Lists are
  brief by default (no `meta`: generation records and token probabilities are most of
  a node's bytes); a single node has every field.
- lists of ids have their own names (`children`, `path`, `roots`, `ids`); one id is
  `parent`, `cursor` or `original`.
- `cursor` is in every answer about a document: the cursor's id after the command,
  null only when the document has no live node.
- a count is `…_count`, never a bare plural.

Builders for the objects that recur (document, change, match, sync, recovery,
generation) live here so every front end shapes them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from loom.document import Document, Node
from loom.errors import UsageError

if TYPE_CHECKING:
    from loom.config import ModelConfig
    from loom.formats.forest import ImportedForest
    from loom.generation.core import Generation
    from loom.generation.recovery import Recovery
    from loom.search import Match
    from loom.sync import SyncedGeneration, SyncResult

VERSION = 1  # of the contract: a field removed or changed in meaning makes it 2

# A node object's fields, in the order they are written.
NODE_FIELDS = (
    "id",
    "parent",
    "children",
    "text",
    "kind",
    "created",
    "modified",
    "tags",
    "bookmark",
    "note",
    "visited",
    "edited",
    "archived",
    "meta",
)
# Named in --fields only: computed from the ancestors, so not part of `all`.
EXTRA_FIELDS = ("full_text",)
FIELD_SETS = {
    "all": NODE_FIELDS,
    "brief": tuple(f for f in NODE_FIELDS if f != "meta"),
}


class Fields(NamedTuple):
    """Which fields node objects carry. `meta_keys` limits `meta` to some of its keys
    (`--fields id,meta.gen`); None means the whole of it."""

    names: tuple[str, ...]
    meta_keys: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, spec: str) -> Fields:
        """`all`, `brief`, or field names separated by commas (sets and names combine:
        `brief,full_text`); `meta.KEY` keeps one key of `meta`. Raises UsageError."""
        wanted: set[str] = set()
        meta_keys: list[str] = []
        for item in (part.strip() for part in spec.split(",")):
            if item in FIELD_SETS:
                wanted.update(FIELD_SETS[item])
            elif item in NODE_FIELDS or item in EXTRA_FIELDS:
                wanted.add(item)
            elif item.startswith("meta.") and len(item) > len("meta."):
                meta_keys.append(item[len("meta.") :])
            else:
                known = ", ".join([*FIELD_SETS, *NODE_FIELDS, *EXTRA_FIELDS, "meta.KEY"])
                raise UsageError(f"--fields: unknown field {item!r} (known: {known})")
        if meta_keys and "meta" not in wanted:
            wanted.add("meta")
            limited: tuple[str, ...] | None = tuple(dict.fromkeys(meta_keys))
        else:
            limited = None
        order = (*NODE_FIELDS, *EXTRA_FIELDS)
        return cls(tuple(f for f in order if f in wanted), limited)


ALL = Fields(FIELD_SETS["all"])
BRIEF = Fields(FIELD_SETS["brief"])


Record = dict[str, Any]

# Each field from the node's id and record: the record is read once per node object (a
# large document reads it from disk and does not keep it).
_GETTERS: dict[str, Callable[[Document, str, Record], Any]] = {
    "id": lambda doc, i, rec: i,
    "parent": lambda doc, i, rec: rec.get("parent"),
    "children": lambda doc, i, rec: doc.live_child_ids(i),
    "text": lambda doc, i, rec: str(rec.get("text", "")),
    "kind": lambda doc, i, rec: str(rec.get("kind", "human")),
    "created": lambda doc, i, rec: rec.get("created"),
    "modified": lambda doc, i, rec: rec.get("modified"),
    "tags": lambda doc, i, rec: list(rec.get("tags", ())),
    "bookmark": lambda doc, i, rec: rec.get("bookmark"),
    "note": lambda doc, i, rec: str(rec.get("note", "")) or None,
    "visited": lambda doc, i, rec: bool(rec.get("visited", False)),
    "edited": lambda doc, i, rec: bool(rec.get("edited", False)),
    "archived": lambda doc, i, rec: bool(rec.get("archived", False)),
    "full_text": lambda doc, i, rec: doc.full_text(i),
}


def node(n: Node, fields: Fields | None = None) -> dict[str, Any]:
    """One node object: every field unless `fields` names fewer."""
    chosen = fields or ALL
    doc, node_id = n.doc, n.id
    rec = doc.peek(node_id)
    out: dict[str, Any] = {}
    for name in chosen.names:
        if name == "meta":
            meta = rec.get("meta", {})
            keys = chosen.meta_keys
            out[name] = meta if keys is None else {k: meta[k] for k in keys if k in meta}
        else:
            out[name] = _GETTERS[name](doc, node_id, rec)
    return out


def nodes(doc: Document, ids: Iterable[str], fields: Fields | None = None) -> list[dict[str, Any]]:
    """A list of node objects, brief unless `fields` says otherwise."""
    chosen = fields or BRIEF
    return [node(Node(doc, i), chosen) for i in ids]


def answer(command: str, **payload: Any) -> dict[str, Any]:
    """A successful answer."""
    return {"ok": True, "command": command, **payload}


def error(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A failed answer. The message is one line with secrets masked (it may quote a URL)."""
    from loom.redact import mask_secrets

    body: dict[str, Any] = {"code": code, "message": mask_secrets(message)}
    if details:
        body["details"] = dict(details)
    return {"ok": False, "error": body}


def document(doc: Document, path: str | Path) -> dict[str, Any]:
    """The document object: what a document is, cheap to build at any size."""
    file = Path(path)
    try:
        size: int | None = file.stat().st_size
    except OSError:
        size = None
    return {
        "id": doc.id,
        "file": str(file.resolve()),
        "title": doc.title,
        "description": doc.description,
        "system": doc.system,
        "version": doc.data.get("version"),
        "node_count": len(doc),
        "root_count": len(doc.root_ids),
        "bytes": size,
    }


def stats(doc: Document) -> dict[str, Any]:
    """What `loom info` adds to the document object: counts that walk the document."""
    from loom import journal

    live = bookmarks = 0
    for node_id in doc.walk():
        live += 1
        bookmarks += "bookmark" in doc.peek(node_id)
    return {
        "live_node_count": live,
        "bookmark_count": bookmarks,
        "undo_count": len(journal.undo_entries(doc)),
        "redo_count": len(journal.redo_entries(doc)),
    }


def change(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of the undo log: what a change did and when."""
    return {"op": entry.get("op"), "summary": entry.get("summary"), "at": entry.get("at")}


def children_page(
    parent: Node, kids: list[str], offset: int, page: list[str], fields: Fields | None = None
) -> dict[str, Any]:
    """`ls`: one page of `parent`'s children `kids` (those listed), from `offset`."""
    doc = parent.doc
    after = offset + len(page)
    return {
        "node": node(parent, fields),
        "nodes": nodes(doc, page, fields),
        "total": len(kids),
        "offset": offset,
        "next_offset": after if after < len(kids) else None,
        "cursor": doc.cursor_id,
    }


def imported(
    forest: ImportedForest,
    source: str,
    doc: Document,
    path: str | Path,
    roots: list[str],
    *,
    current: bool,
) -> dict[str, Any]:
    """`import`: what was brought into the document at `path`, and where it went."""
    return {
        "format": forest.format,
        "source": source,
        "document": document(doc, path),
        "node_count": len(forest),
        "roots": roots,
        "notes": forest.notes,
        "current": current,
        "cursor": doc.cursor_id,
    }


def match(doc: Document, found: Match, fields: Fields | None = None) -> dict[str, Any]:
    """A search hit: the node (brief by default) and where the match is in its text
    (its segment, or with a branch search its full text)."""
    return {
        "node": node(Node(doc, found.node_id), fields or BRIEF),
        "start": found.start,
        "end": found.end,
        "match": found.text,
    }


def sync(result: SyncResult) -> dict[str, Any]:
    """What one `loom sync` did: `created` lists the ids of the nodes it made; `edits`
    is the end of the branch holding the file's edits, when it made one; `cursor` is the
    cursor after it."""
    return {
        "file": str(result.file),
        "action": result.action,
        "first_sync": result.first_sync,
        "file_changed": result.file_changed,
        "tree_changed": result.tree_changed,
        "both_changed": result.both_changed,
        "written": result.written,
        "created": list(result.created),
        "edits": result.edits,
        "cursor": result.cursor,
        "chars": result.chars,
        "notes": list(result.notes),
    }


def synced_generation(synced: SyncedGeneration) -> dict[str, Any]:
    """`gen --sync`: the sync before the generation and the one after it."""
    return {
        "before": sync(synced.before),
        "after": None if synced.after is None else sync(synced.after),
    }


def recovery(item: Recovery) -> dict[str, Any]:
    """A recovery file waiting to be added back (`loom recover --list`)."""
    return {
        "file": str(item.path),
        "document_file": item.document,
        "document_id": item.document_id,
        "parent": item.parent,
        "created": item.created,
        "node_count": len(item.nodes),
        "chars": sum(len(n["text"]) for n in item.nodes),
    }


def generation(result: Generation, fields: Fields | None = None) -> dict[str, Any]:
    """What a generation made: the parent's id, the new children (brief by default),
    the cursor afterwards and the warnings (dropped parameters, trimming…)."""
    made = result.nodes
    return {
        "parent": result.parent,
        "nodes": [node(n, fields or BRIEF) for n in made],
        "cursor": result.cursor,
        "warnings": list(result.warnings),
    }


def model(config: ModelConfig, default: str | None) -> dict[str, Any]:
    """A configured model as `loom models` lists it: never its key, only the variable
    that holds it; whether it is usable now, and why not."""
    usable, why = config.usable()
    return {**config.public(), "default": config.name == default, "usable": usable, "status": why}


def exported(
    doc: Document,
    format: str,
    target: str | None,
    size: int,
    notes: list[str],
    fields: Fields | None = None,
) -> dict[str, Any]:
    """What an export wrote: a branch (ending at `target`, else the cursor), `target`'s
    subtree, or the whole forest (no node); `content` or `output` is added by the caller.
    `notes` are `loom.formats.export_notes`."""
    from loom.formats import BRANCH_FORMATS

    branch = format in BRANCH_FORMATS
    chosen = doc.resolve(target) if (branch or target is not None) else None
    return {
        "format": format,
        "scope": "branch" if branch else "subtree" if target is not None else "forest",
        "node": None if chosen is None else node(chosen, fields),
        "bytes": size,
        "notes": notes,
    }


# ---- the schema ------------------------------------------------------------------------

SCHEMA_FILE = "answers-1.json"


def schema(command: str | None = None) -> dict[str, Any]:
    """The JSON Schema of every answer, or of one command's (its answer or an error),
    with only the definitions it uses. Raises UsageError for an unknown command."""
    import json
    from importlib import resources

    text = resources.files("loom").joinpath("data", "schema", SCHEMA_FILE).read_text("utf-8")
    whole: dict[str, Any] = json.loads(text)
    if command is None:
        return whole
    defs = whole["$defs"]
    key = "answer:" + command.replace(" ", "-")
    if key not in defs:
        known = ", ".join(schema_commands(whole))
        raise UsageError(f"no command {command!r} (commands: {known})")
    root = {"anyOf": [{"$ref": f"#/$defs/{key}"}, {"$ref": "#/$defs/Error"}]}
    used: dict[str, Any] = {}
    pending: list[Any] = [root]
    while pending:  # the definitions reachable from this command's answer
        item = pending.pop()
        if isinstance(item, dict):
            target = item.get("$ref")
            if isinstance(target, str) and target.startswith("#/$defs/"):
                name = target.removeprefix("#/$defs/")
                if name not in used:
                    used[name] = defs[name]
                    pending.append(defs[name])
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return {
        "$schema": whole["$schema"],
        "$id": f"{whole['$id']}:{command.replace(' ', '-')}",
        "title": f"loom {command} --json, version {VERSION}",
        **root,
        "$defs": {name: used[name] for name in defs if name in used},
    }


def schema_commands(whole: Mapping[str, Any] | None = None) -> list[str]:
    """The commands the schema describes, by name ("models add")."""
    defs = (whole or schema())["$defs"]
    return [k.removeprefix("answer:").replace("-", " ") for k in defs if k.startswith("answer:")]
