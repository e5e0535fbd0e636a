"""The original Python loom (socketteer/loom): nested JSON trees of text segments.

Reads the current format (Sep 2021 on) and the older one, a bare node, a list of
root nodes, and JSONL lines of {id, text, parent_id}. A tree saved while hoisted
has a compound root whose real nodes sit in `masked_head`; every compound node is
unzipped back into its chain. Generation records are joined by id with
`model_responses`, from the file or from backup files beside it
(`model_responses-*.json`, also in `backups/`, or `<name>_model_responses*.json`),
and token logprobs with counterfactuals become loom's `meta.logprobs`.

`template` nodes were Python f-strings that tool evaluated; here they are only text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from loom import files
from loom.document import KINDS, Document
from loom.errors import DocumentError, LoomError
from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, describe, loads, parse_iso, rest, tags_from, to_iso
from loom.formats.secrets import drop_secrets
from loom.formats.selection import (
    document_import,
    export_id,
    export_ids,
    gen_of,
    import_fields,
    import_id,
    model_of,
    select,
)
from loom.formats.tokens import (
    aligned_prefix,
    alternatives,
    fit,
    logprobs_from_openai,
    logprobs_record,
    prompt_fingerprint,
)

FORMAT = "pyloom"
_R = Reader(FORMAT)
# Node keys mapped to loom fields (everything else is kept in meta.import.fields).
_MAPPED = (
    "id",
    "parent_id",
    "parentId",
    "text",
    "children",
    "visited",
    "tags",
    "meta",
    "generation",
    "history",
    "notes",
    "bookmark",
    "archived",
    "canonical",
    "loom_kind",
)
_TOP_MAPPED = ("root", "model_responses", "selected_node_id")
# Marks the empty root the exporter adds to hold several trees; the importer drops it.
SYNTHETIC_ROOT = "loom_synthetic_root"
# pyloom generated with the OpenAI API; loom's engine labels those logprobs this way.
OPENAI_LOGPROBS = "post-sampling"
# Where loom keeps meta.logprobs' "source" in an exported completion.
SOURCE_KEY = "logprobsSource"
# A loom kind pyloom's "source" cannot express (a chat role, an imported text).
LOOM_KIND = "loom_kind"
ResponseFinder = Callable[[set[str]], dict[str, Any]]


def sniff(data: Any) -> bool:
    if isinstance(data, dict):
        if isinstance(data.get("root"), dict):
            return True
        return "text" in data and isinstance(data.get("children"), list)
    if isinstance(data, list) and data:
        return all(isinstance(d, dict) and "text" in d for d in data[:20])
    return False


def sniff_lines(records: list[Any]) -> bool:
    """JSONL of flat nodes: {id, text, parent_id} (or parentId)."""
    return all(
        isinstance(r, dict) and "id" in r and ("parent_id" in r or "parentId" in r or "text" in r)
        for r in records
    ) and any(isinstance(r, dict) and ("parent_id" in r or "parentId" in r) for r in records)


# ---- reading -------------------------------------------------------------------------------


def read(
    path: Path,
    raw: bytes,
    *,
    responses: Iterable[Path] = (),
    discover: bool = True,
    data: Any = None,
    max_bytes: int | None = None,
) -> ImportedForest:
    """Import a pyloom file; `responses` are backup files to join, beside any found near `path`.

    `data` is the already parsed content, if the caller has it. Each response file
    must be a regular file of at most `max_bytes`; the forest counts what they add
    to its `input_bytes`.
    """
    if data is None:
        data = loads(raw, str(path))
    extra: dict[str, Any] = {}
    read = 0
    for file in responses:
        loaded, size = load_responses(file, strict=True, max_bytes=max_bytes)
        extra.update(loaded)
        read += size

    def finder(missing: set[str]) -> dict[str, Any]:
        nonlocal read
        found: dict[str, Any] = {}
        for file in response_files(path) if discover else []:
            try:
                loaded, size = load_responses(file, strict=False, max_bytes=max_bytes)
            except LoomError:
                continue
            read += size
            found.update({k: v for k, v in loaded.items() if k not in found})
            if missing <= found.keys():
                break
        return found

    forest = parse(data, name=str(path), responses=extra, find_responses=finder)
    forest.input_bytes += read
    return forest


def response_files(path: Path) -> list[Path]:
    """Backup files of model responses near a tree file, newest first."""
    folder = path.parent
    found: list[Path] = []
    for pattern_folder, pattern in (
        (folder, "model_responses-*.json"),
        (folder / "backups", "model_responses-*.json"),
        (folder, f"{path.stem}_model_responses*.json"),
    ):
        if pattern_folder.is_dir():
            found.extend(sorted(pattern_folder.glob(pattern), reverse=True))
    return [f for f in dict.fromkeys(found) if f.resolve() != path.resolve()]


def load_responses(
    path: Path, *, strict: bool, max_bytes: int | None = None
) -> tuple[dict[str, Any], int]:
    """A model-responses backup file: {response id: response} (or wrapped in "model_responses"),
    and its size. `[]`, which pyloom writes for an empty backup, holds no responses."""
    raw = files.read_bytes(
        path, limit=max_bytes, what="model-responses file", note=" (raise it with --max-bytes)"
    )
    data = loads(raw, str(path))
    if isinstance(data, dict) and isinstance(data.get("model_responses"), dict):
        data = data["model_responses"]
    if data == []:
        return {}, len(raw)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        if strict:
            raise DocumentError(
                f"{path}: not a pyloom model-responses file (expected an object of responses by id)"
            )
        return {}, len(raw)
    return data, len(raw)


def parse(
    data: Any,
    *,
    name: str = "",
    responses: dict[str, Any] | None = None,
    find_responses: ResponseFinder | None = None,
) -> ImportedForest:
    forest = ImportedForest(FORMAT, source=name)
    if isinstance(data, list):
        top: dict[str, Any] = {}
        tops = [_R.obj(d, f"entry {i + 1} of the list") for i, d in enumerate(data)]
    else:
        data = _R.obj(data, "the file")
        if "root" in data:
            top = data
            tops = [_R.obj(data["root"], '"root"')]
        else:
            top = {}
            tops = [data]
    masks: dict[str, str] = {}
    tops = [_unhoist(t, masks) for t in tops]
    if len(tops) == 1 and tops[0].get(SYNTHETIC_ROOT) and not tops[0].get("text"):
        tops = [
            _R.obj(c, "a child of the root")
            for c in _R.arr(tops[0].get("children", []), "the root's children")
        ]
    _flatten(tops, forest)
    known = dict(_R.obj(top.get("model_responses") or {}, '"model_responses"'))
    known.update(responses or {})
    wanted = {g for n in forest.nodes.values() if (g := n.fields.get("generation_id")) is not None}
    missing = wanted - known.keys()
    if missing and find_responses is not None:
        known.update(find_responses(missing))
    _join_generations(forest, known)
    _chapters(top, forest)
    for node_id in _idents(top.get("canonical"), '"canonical"'):
        node = forest.nodes.get(node_id)
        if node is not None and "canonical" not in node.tags:
            node.tags.append("canonical")
    selected = top.get("selected_node_id")
    if selected is not None:
        selected = masks.get(str(selected), str(selected))
        if selected in forest.nodes:
            forest.cursor = selected
        else:
            forest.notes.append(
                f"selected_node_id {short(selected)} is not in the tree; the cursor starts at the root"
            )
    if name:
        forest.title = _title_from(name)
    forest.fields = {**rest(top, _TOP_MAPPED), **forest.fields}
    return forest


def parse_lines(records: list[Any], *, name: str = "") -> ImportedForest:
    """JSONL export of pyloom: one {id, text, parent_id} per line."""
    forest = ImportedForest(FORMAT, source=name)
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    for i, value in enumerate(records, 1):
        rec = _R.obj(value, f"line {i}")
        node_id = _R.ident(rec.get("id"), f'the "id" on line {i}')
        where = f"node {short(node_id)}"
        ids.append(node_id)
        parents[node_id] = _R.opt_ident(rec, "parent_id", where) or _R.opt_ident(
            rec, "parentId", where
        )
        node = ImportedNode(node_id, text=_R.text(rec, "text", where), visited=True)
        node.fields = rest(rec, ("id", "text", "parent_id", "parentId"))
        forest.nodes[node_id] = node
    kids, roots = link(FORMAT, ids, parents=parents, parent_field="parent_id")
    for node_id, node in forest.nodes.items():
        node.children = kids[node_id]
    forest.roots = roots
    if name:
        forest.title = _title_from(name)
    return forest


def _title_from(name: str) -> str:
    stem = Path(name).name
    for suffix in (".jsonl", ".json"):
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _idents(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    return [_R.ident(v, f"an entry of {where}") for v in _R.arr(value, where)]


def _unhoist(root: dict[str, Any], masks: dict[str, str]) -> dict[str, Any]:
    """Unzip every compound node (a hoisted root, a zipped chain) back into its nodes."""

    def unzip(mask: dict[str, Any]) -> dict[str, Any]:
        where = f"compound node {short(mask.get('id'))}"
        head = _R.obj(mask.get("masked_head"), f'the "masked_head" of {where}')
        tail_id = _R.ident(mask.get("tail_id"), f'the "tail_id" of {where}')
        tail = None
        stack = [head]
        while stack:
            current = stack.pop()
            if not isinstance(current, dict):
                continue
            if str(current.get("id")) == tail_id:
                tail = current
                break
            kids = current.get("children")
            if isinstance(kids, list):
                stack.extend(kids)
        if tail is None:
            raise _R.fail(
                f'the "tail_id" {short(tail_id)} of {where} is not inside its masked_head'
            )
        moved = _R.arr(mask.get("children", []), f'the "children" of {where}')
        tail["children"] = [
            *_R.arr(tail.get("children", []), f'the "children" of node {short(tail_id)}'),
            *moved,
        ]
        if mask.get("id") is not None:
            masks[str(mask["id"])] = tail_id
        return head

    while "masked_head" in root:
        root = unzip(root)
    stack = [root]
    while stack:
        node = stack.pop()
        kids = node.get("children")
        if not isinstance(kids, list):
            continue
        for i, child in enumerate(kids):
            while isinstance(child, dict) and "masked_head" in child:
                child = unzip(child)
                kids[i] = child
            if isinstance(child, dict):
                stack.append(child)
    return root


def _flatten(tops: list[dict[str, Any]], forest: ImportedForest) -> None:
    counter = 0

    def sid(rec: Any, where: str) -> str:
        nonlocal counter
        rec = _R.obj(rec, where)
        if rec.get("id") is None:
            counter += 1
            node_id = f"#{counter}"  # bare nodes may have no id
        else:
            node_id = _R.ident(rec["id"], f'the "id" of {where}')
        if node_id in forest.nodes or node_id in pending:
            raise _R.fail(f"node id {short(node_id)} is used by two nodes")
        pending.add(node_id)
        return node_id

    pending: set[str] = set()
    stack: list[tuple[str, dict[str, Any]]] = []
    for i, rec in enumerate(tops):
        node_id = sid(rec, f"root {i + 1}")
        forest.roots.append(node_id)
    stack = [(node_id, rec) for node_id, rec in zip(forest.roots, tops, strict=True)][::-1]
    while stack:
        node_id, rec = stack.pop()
        where = f"node {short(node_id)}"
        node = _node(node_id, rec, where)
        forest.nodes[node_id] = node
        kids = _R.arr(rec.get("children", []), f'the "children" of {where}')
        pushed: list[tuple[str, dict[str, Any]]] = []
        for child in kids:
            child_id = sid(child, f"a child of {where}")
            node.children.append(child_id)
            pushed.append((child_id, child))
        stack.extend(reversed(pushed))


def _node(node_id: str, rec: dict[str, Any], where: str) -> ImportedNode:
    node = ImportedNode(node_id, text=_R.text(rec, "text", where))
    fields = rest(rec, _MAPPED)
    node.visited = _R.flag(rec, "visited", where)
    meta = _R.obj(rec.get("meta") or {}, f'the "meta" of {where}')
    created = meta.get("creation_timestamp")
    if created is not None:
        node.created = to_iso(created)
    source = meta.get("source")
    kept_meta = {k: v for k, v in meta.items() if k not in ("creation_timestamp", "generation")}
    if created is not None and node.created is None:
        kept_meta["creation_timestamp"] = created
    if kept_meta:
        fields["meta"] = kept_meta
    generation = rec.get("generation")
    old_choice = meta.get("generation")
    if rec.get(LOOM_KIND) in KINDS:
        node.kind = str(rec[LOOM_KIND])
    elif source is not None:
        node.kind = "model" if source in ("AI", "mixed") else "human"
    elif generation is not None or old_choice is not None:
        node.kind = "model"
    if isinstance(generation, dict) and generation.get("id") is not None:
        fields["generation_id"] = _R.ident(generation["id"], f'the generation "id" of {where}')
        index = generation.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise _R.fail(f'the generation "index" of {where} is {index!r}, not a count')
        fields["generation_index"] = index
        extra = rest(generation, ("id", "index"))
        if extra:
            fields["generation"] = extra
    elif generation is not None:
        fields["generation"] = generation
    if isinstance(old_choice, dict):
        _old_generation(node, old_choice, fields)
    elif old_choice is not None:
        fields["meta_generation"] = old_choice
    tags, changed = tags_from(
        _string(t, f"a tag of {where}")
        for t in _R.arr(rec.get("tags") or [], f'the "tags" of {where}')
    )
    if changed:
        fields["tags"] = rec.get("tags")
    if "bookmark" in tags or _R.flag(rec, "bookmark", where):
        node.bookmark = {}
    if "archived" in tags or _R.flag(rec, "archived", where):
        node.archived = True
    node.tags = [t for t in tags if t not in ("bookmark", "archived")]
    if _R.flag(rec, "canonical", where) and "canonical" not in node.tags:
        node.tags.append("canonical")
    for i, entry in enumerate(_R.arr(rec.get("history") or [], f'the "history" of {where}')):
        entry = _R.obj(entry, f"history entry {i + 1} of {where}")
        item: dict[str, Any] = {"text": _R.text(entry, "text", f"history entry {i + 1} of {where}")}
        at = to_iso(entry.get("timestamp"))
        if at:
            item["at"] = at
        node.history.append(item)
    notes = [
        _string(n, f"a note of {where}")
        for n in _R.arr(rec.get("notes") or [], f'the "notes" of {where}')
    ]
    if len(notes) == 1:
        node.note = notes[0]
    elif notes:
        node.note = "\n\n".join(n for n in notes if n.strip())
        fields["notes"] = notes  # several notes: the joined text plus the list as it was
    node.fields = fields
    return node


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _R.fail(f"{what} is {describe(value)}, not text")
    return value


def _old_generation(node: ImportedNode, choice: dict[str, Any], fields: dict[str, Any]) -> None:
    """Before Sep 2021 the whole OpenAI choice sat in meta.generation."""
    gen: dict[str, Any] = {}
    for key in ("model", "finish_reason"):
        if choice.get(key) is not None:
            gen[key] = choice[key]
    request = {key: choice[key] for key in ("id", "index") if choice.get(key) is not None}
    if request:
        gen["request"] = request
    prompt = choice.get("prompt")
    if isinstance(prompt, str):
        gen.update(prompt_fingerprint(prompt))
    if gen:
        node.meta["gen"] = gen
    record = logprobs_from_openai(choice.get("logprobs"), source=OPENAI_LOGPROBS)
    if record is not None:
        fitted = fit(node.text, record)
        if fitted is not None:
            node.meta["logprobs"] = fitted
        else:
            fields["logprobs"] = record
    kept = {
        k: v
        for k, v in choice.items()
        if k not in ("model", "finish_reason", "index", "id", "prompt", "logprobs", "text")
    }
    if choice.get("logprobs") is not None and record is None:
        kept["logprobs"] = choice["logprobs"]
    if isinstance(choice.get("text"), str) and choice["text"] != node.text:
        kept["text"] = choice["text"]  # the text as generated, before an edit
    if kept:
        fields["meta_generation"] = kept


def _join_generations(forest: ImportedForest, responses: dict[str, Any]) -> None:
    """Give each node its generation record and the token logprobs that match its text.

    Nodes may share a response (and even a completion): its logprobs are parsed once
    and each node keeps only the tokens that spell the start of its own text. A
    response some node has drifted from (edited after generation) is kept whole,
    once, in the document's import record, so nothing of it is lost and nothing is
    copied per node.
    """
    used: set[str] = set()
    kept: dict[str, Any] = {}
    parsed: dict[tuple[str, int], dict[str, Any] | None] = {}
    missing = edited = 0
    for node in forest.nodes.values():
        rid = node.fields.get("generation_id")
        if rid is None:
            continue
        index = node.fields["generation_index"]
        response = responses.get(rid)
        completions = response.get("completions") if isinstance(response, dict) else None
        if (
            not isinstance(response, dict)
            or not isinstance(completions, list)
            or not 0 <= index < len(completions)
            or not isinstance(completions[index], dict)
        ):
            missing += 1
            continue
        used.add(rid)
        completion = completions[index]
        gen: dict[str, Any] = {"request": {"id": rid, "index": index, "n": len(completions)}}
        if isinstance(response.get("model"), str):
            gen["model"] = response["model"]
        if isinstance(completion.get("finishReason"), str):
            gen["finish_reason"] = completion["finishReason"]
        stamp = to_iso(response.get("timestamp"))
        if stamp:
            gen["created"] = stamp
            node.created = node.created or stamp
        prompt = response.get("prompt")
        if isinstance(prompt, dict) and isinstance(prompt.get("text"), str):
            gen.update(prompt_fingerprint(prompt["text"]))
        node.meta["gen"] = gen
        del node.fields["generation_id"], node.fields["generation_index"]
        if (rid, index) not in parsed:
            source = completion.get(SOURCE_KEY)
            parsed[rid, index] = _completion_logprobs(
                completion.get("tokens"), source if isinstance(source, str) else OPENAI_LOGPROBS
            )
        record = parsed[rid, index]
        generated = completion.get("text")
        drifted = isinstance(generated, str) and generated != node.text
        if record is not None:
            matching = aligned_prefix(node.text, record)
            if matching is not None:
                node.meta["logprobs"] = matching
            drifted = drifted or fit(node.text, record) is None
        if drifted:
            edited += 1
            kept[rid] = response
    if kept:
        forest.fields["model_responses"] = kept
    if missing:
        forest.notes.append(
            f"{missing} node(s) point to model responses that were not found "
            "(pass the model_responses-*.json backups with --responses)"
        )
    if edited:
        forest.notes.append(
            f"{edited} node(s) were edited after generation: each keeps the token logprobs "
            "that still match its text; their responses are kept once in the document's "
            "import record"
        )
    unused = len(set(responses) - used)
    if unused:
        forest.notes.append(
            f"{unused} model response(s) not referenced by any node were not imported"
        )


def _completion_logprobs(tokens: Any, source: str) -> dict[str, Any] | None:
    """pyloom's token list ({generatedToken: {token, logprob}, counterfactuals}) in loom's shape."""
    if not isinstance(tokens, list) or not tokens:
        return None
    texts: list[str] = []
    lps: list[float] = []
    top: list[list[tuple[str, float]]] = []
    for entry in tokens:
        generated = entry.get("generatedToken") if isinstance(entry, dict) else None
        if not isinstance(generated, dict) or not isinstance(generated.get("token"), str):
            return None
        lp = generated.get("logprob")
        if isinstance(lp, bool) or not isinstance(lp, int | float):
            return None
        texts.append(generated["token"])
        lps.append(float(lp))
        top.append(alternatives(entry.get("counterfactuals")))
    return logprobs_record(texts, lps, top, source=source)


def _chapters(top: dict[str, Any], forest: ImportedForest) -> None:
    """A chapter starts at a node: it becomes a bookmark titled with the chapter's name."""
    chapters = top.get("chapters")
    if not isinstance(chapters, dict):
        return
    for node in forest.nodes.values():
        chapter_id = node.fields.get("chapter_id")
        chapter = chapters.get(chapter_id) if isinstance(chapter_id, str) else None
        if not isinstance(chapter, dict):
            continue
        title = chapter.get("title")
        mark = dict(node.bookmark or {})
        if isinstance(title, str) and title and not mark.get("title"):
            mark["title"] = title
        node.bookmark = mark


# ---- export ----------------------------------------------------------------------------------


_DEFAULT_TAGS = {
    "bookmark": {"scope": "node", "hide": False, "toggle_key": "b", "icon": "bookmark-black"},
    "canonical": {"scope": "ancestry", "hide": False, "toggle_key": "*", "icon": "book-white"},
    "archived": {"scope": "node", "hide": True, "toggle_key": "!", "icon": "archive-yellow"},
    "note": {"scope": "node", "hide": True, "toggle_key": "#", "icon": "note-black"},
    "pinned": {"scope": "node", "hide": False, "toggle_key": "^", "icon": "pin-red"},
}


def _tag_definition(name: str) -> dict[str, Any]:
    base = _DEFAULT_TAGS.get(
        name, {"scope": "node", "hide": False, "toggle_key": "None", "icon": "None"}
    )
    return {"name": name, "show_only": False, **base}


def _pyloom_time(value: Any) -> str | None:
    dt = parse_iso(value)
    return dt.strftime("%Y-%m-%d-%H.%M.%S") if dt else None


def export(doc: Document, node: str | None = None) -> bytes:
    """The forest (or NODE's subtree with its ancestors) in pyloom's current format.

    Several trees go under one empty root, as pyloom itself starts a tree; deleted
    (archived) nodes are kept with pyloom's "archived" tag.
    """
    selection = select(doc, node, archived=True)
    nodes = doc.nodes
    out_id = export_ids(doc, selection, FORMAT)
    responses: dict[str, dict[str, Any]] = {}
    kept = _kept_responses(doc)
    chapters: dict[str, dict[str, Any]] = {}
    tag_names: set[str] = set()
    header: dict[str, Any] = {}
    if selection.roots:
        header = document_import(doc, FORMAT, selection.roots[0])
    raw_chapters = header.get("chapters")
    known_chapters: dict[str, Any] = raw_chapters if isinstance(raw_chapters, dict) else {}
    bodies: dict[str, dict[str, Any]] = {}
    parents = selection.parent_map()
    for node_id in selection.order:
        rec = nodes[node_id]
        fields = import_fields(doc, node_id, FORMAT)
        body: dict[str, Any] = {
            k: v
            for k, v in fields.items()
            if k not in _MAPPED
            and k
            not in (
                "generation_id",
                "generation_index",
                "logprobs",
                "generated_text",
                "meta_generation",
                "chapter_id",
            )
        }
        body["id"] = out_id[node_id]
        parent = parents.get(node_id)
        if parent is not None:
            body["parent_id"] = out_id[parent]
        body["text"] = rec.get("text", "")
        body["visited"] = bool(rec.get("visited"))
        tags = list(rec.get("tags", ()))
        if "bookmark" in rec:
            tags.append("bookmark")
        if rec.get("archived"):
            tags.append("archived")
        if tags:
            body["tags"] = tags
            tag_names.update(tags)
        meta: dict[str, Any] = (
            dict(fields.get("meta") or {}) if isinstance(fields.get("meta"), dict) else {}
        )
        stamp = _pyloom_time(rec.get("created"))
        if stamp:
            meta["creation_timestamp"] = stamp
        kind = rec.get("kind", "human")
        meta.setdefault("source", "AI" if kind in ("model", "assistant") else "prompt")
        if kind not in ("human", "model"):
            body[LOOM_KIND] = kind
        meta.setdefault("modified", bool(rec.get("history")))
        body["meta"] = meta
        generation = _response(doc, node_id, responses, kept)
        if generation is not None:
            body["generation"] = generation
        elif isinstance(fields.get("generation_id"), str):
            # Its response was never found on import: keep the pointer for pyloom's backups.
            body["generation"] = {
                "id": fields["generation_id"],
                "index": fields.get("generation_index", 0),
            }
        if rec.get("history"):
            body["history"] = [
                {"timestamp": _pyloom_time(h.get("at")) or "", "text": h.get("text", "")}
                for h in rec["history"]
                if isinstance(h, dict)
            ]
        if rec.get("note"):
            body["notes"] = [rec["note"]]
        title = rec["bookmark"].get("title") if isinstance(rec.get("bookmark"), dict) else None
        if title:
            chapter_id = (
                fields.get("chapter_id") if isinstance(fields.get("chapter_id"), str) else None
            )
            chapter_id = chapter_id or str(
                uuid.uuid5(uuid.NAMESPACE_OID, f"{doc.id}/{node_id}/chapter")
            )
            chapters[chapter_id] = {
                **(known_chapters.get(chapter_id) or {}),
                "id": chapter_id,
                "root_id": out_id[node_id],
                "title": title,
            }
            body["chapter_id"] = chapter_id
        bodies[node_id] = body
    if len(selection.roots) == 1:
        root_key = selection.roots[0]
        roots_children = None
    else:
        root_key = "\0root"
        root_id = str(export_id(doc, "root"))
        bodies[root_key] = {
            "id": root_id,
            "text": "",
            "mutable": False,
            "visited": True,
            SYNTHETIC_ROOT: True,
        }
        roots_children = selection.roots
        for r in selection.roots:
            bodies[r]["parent_id"] = root_id
    children = dict(selection.children)
    if roots_children is not None:
        children[root_key] = roots_children
    top: dict[str, Any] = {
        k: v for k, v in header.items() if k not in _TOP_MAPPED and k not in ("chapters", "tags")
    }
    top["chapters"] = chapters
    tag_defs = dict(header.get("tags") or {}) if isinstance(header.get("tags"), dict) else {}
    for name in ("bookmark", "canonical", "archived", "note", "pinned", *sorted(tag_names)):
        tag_defs.setdefault(name, _tag_definition(name))
    top["tags"] = tag_defs
    top["model_responses"] = responses
    cursor = doc.cursor_id
    if cursor in out_id:
        top["selected_node_id"] = out_id[cursor]
    return _nested(top, root_key, bodies, children)


def _kept_responses(doc: Document) -> dict[str, dict[str, Any]]:
    """The pyloom responses earlier imports kept whole (ones a node's text drifted from)."""
    imports = doc.data.get("import")
    entries = imports.get(FORMAT) if isinstance(imports, dict) else None
    kept: dict[str, dict[str, Any]] = {}
    for entry in entries if isinstance(entries, list) else ():
        fields = entry.get("fields") if isinstance(entry, dict) else None
        stored = fields.get("model_responses") if isinstance(fields, dict) else None
        if isinstance(stored, dict):
            clean = drop_secrets(stored)[0]  # an older loom may have kept one
            kept.update({k: v for k, v in clean.items() if isinstance(v, dict)})
    return kept


def _prompt(doc: Document, node_id: str, gen: dict[str, Any]) -> dict[str, Any]:
    """What pyloom's `prompt` holds ({"text"}), rebuilt from the branch above the node when
    it matches the digest loom recorded; else an empty text beside that digest."""
    digest = gen.get("prompt")
    if not isinstance(digest, dict):
        return {"text": ""}
    chars = digest.get("chars")
    if isinstance(chars, int) and not isinstance(chars, bool) and chars >= 0:
        # The prompt was the branch's text, or its tail when the whole did not fit:
        # either way its last `chars` characters, so only those are gathered.
        pieces: list[str] = []
        have = 0
        up = doc.nodes[node_id].get("parent")
        while isinstance(up, str) and up in doc.nodes and have < chars:
            piece = doc.nodes[up].get("text", "")
            pieces.append(piece)
            have += len(piece)
            up = doc.nodes[up].get("parent")
        if have >= chars:
            tail = "".join(reversed(pieces))[have - chars :]
            if prompt_fingerprint(tail)["prompt"].get("sha256") == digest.get("sha256"):
                return {"text": tail}
    known = {k: v for k, v in digest.items() if k in ("sha256", "chars")}
    return {"text": "", **known}


def _response(
    doc: Document,
    node_id: str,
    responses: dict[str, dict[str, Any]],
    kept: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """Write a node's generation record and logprobs as a pyloom model response; return its key.

    A response an import kept whole goes back out as it came in (the completion as
    generated, before the node's edit).
    """
    meta = doc.nodes[node_id].get("meta") or {}
    gen = gen_of(doc, node_id)
    logprobs = meta.get("logprobs") if isinstance(meta, dict) else None
    if not gen and not isinstance(logprobs, dict):
        return None
    raw_request = gen.get("request")
    request: dict[str, Any] = raw_request if isinstance(raw_request, dict) else {}
    # Only a response id that came from pyloom is reused; others get one of their own.
    rid = (
        request.get("id")
        if isinstance(request.get("id"), str) and import_id(doc, node_id, FORMAT)
        else None
    )
    index = request.get("index") if isinstance(request.get("index"), int) and rid else 0
    original = kept.get(rid) if rid is not None else None
    completions_in = original.get("completions") if original is not None else None
    if isinstance(completions_in, list) and 0 <= int(index or 0) < len(completions_in):
        # A copy: a later node may add a completion, and the document's record stays as it is.
        response = responses.setdefault(
            str(rid), {**(original or {}), "completions": list(completions_in)}
        )
        if not isinstance(response.get("prompt"), dict):
            response["prompt"] = _prompt(doc, node_id, gen)
        return {"id": rid, "index": int(index or 0)}
    if rid is None or (rid in responses and _slot_taken(responses[rid], int(index or 0))):
        rid, index = f"loom-{node_id}", 0
    response = responses.setdefault(
        rid,
        {
            "id": rid,
            "model": model_of(doc, node_id) or "",
            "prompt": _prompt(doc, node_id, gen),
            "completions": [],
        },
    )
    if isinstance(gen.get("created"), str):
        response.setdefault("timestamp", _pyloom_time(gen["created"]) or gen["created"])
    completions: list[dict[str, Any]] = response["completions"]
    while len(completions) <= int(index or 0):
        completions.append({"text": "", "finishReason": None, "tokens": []})
    text = doc.nodes[node_id].get("text", "")
    tokens: list[dict[str, Any]] = []
    if isinstance(logprobs, dict):
        offset = 0
        tops = logprobs.get("top") or []
        for i, (token, lp) in enumerate(
            zip(logprobs.get("tokens", []), logprobs.get("lp", []), strict=False)
        ):
            alts = tops[i] if i < len(tops) else []
            tokens.append(
                {
                    "generatedToken": {"token": token, "logprob": lp},
                    "position": {"start": offset, "end": offset + len(token)},
                    "counterfactuals": {a[0]: a[1] for a in alts} if alts else None,
                }
            )
            offset += len(token)
    completions[int(index or 0)] = {
        "text": text,
        "finishReason": gen.get("finish_reason"),
        "tokens": tokens,
    }
    source = logprobs.get("source") if isinstance(logprobs, dict) else None
    if isinstance(source, str) and source != OPENAI_LOGPROBS:
        completions[int(index or 0)][SOURCE_KEY] = source  # pyloom ignores it; loom reads it back
    return {"id": rid, "index": int(index or 0)}


def _slot_taken(response: dict[str, Any], index: int) -> bool:
    completions = response.get("completions", [])
    return index < len(completions) and bool(
        completions[index].get("tokens") or completions[index].get("text")
    )


def _nested(
    top: dict[str, Any],
    root: str,
    bodies: dict[str, dict[str, Any]],
    children: dict[str, list[str]],
) -> bytes:
    """Serialize nested nodes iteratively: orjson refuses nesting past a few hundred levels."""
    parts: list[bytes] = [b'{"root":']
    stack: list[tuple[str, int]] = [(root, -1)]
    while stack:
        node_id, position = stack.pop()
        kids = children.get(node_id, [])
        if position == -1:
            head = orjson.dumps(bodies[node_id])
            parts.append(head[:-1] + (b',"children":[' if len(head) > 2 else b'"children":['))
            position = 0
        if position < len(kids):
            if position > 0:
                parts.append(b",")
            stack.append((node_id, position + 1))
            stack.append((kids[position], -1))
        else:
            parts.append(b"]}")
    rest_of_top = orjson.dumps(top)
    if len(rest_of_top) > 2:
        parts.append(b"," + rest_of_top[1:])
    else:
        parts.append(b"}")
    parts.append(b"\n")
    return b"".join(parts)
