"""Trading with the outside: import other looms' trees, export documents, ingest texts and pages.

Format modules, trafilatura, pypdf and httpx2 load inside the commands, so other
commands never pay for them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from loom import files, payloads, store, workspace
from loom.cli.common import (
    command,
    diagnostic,
    doc_path,
    emit,
    fields,
    json_mode,
    out,
    read_doc,
    stdout_is_terminal,
    write_doc,
)
from loom.cli.main import cli
from loom.document import Document
from loom.errors import BadInput
from loom.files import size_text
from loom.formats import (  # a light module: no format is loaded
    EXPORT_FORMATS,
    IMPORT_FORMATS,
    format_for_name,
)
from loom.formats import MAX_BYTES as IMPORT_MAX_BYTES
from loom.ingest import CHUNK_MODES, MAX_BYTES
from loom.ingest import DEADLINE as INGEST_DEADLINE


def _notes(notes: list[str]) -> None:
    for note in notes:
        diagnostic("note", note)


# ---- import ---------------------------------------------------------------------------------


@command(cli, "import")
@click.argument("source", metavar="FILE")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(IMPORT_FORMATS),
    help="The file's format (default: detected).",
)
@click.option(
    "-p", "--parent", metavar="NODE", help="Graft the trees under NODE (default: as new roots)."
)
@click.option(
    "--new", "new_path", metavar="OUT.loom.json", help="Create a new document holding the import."
)
@click.option("--force", is_flag=True, help="With --new: replace OUT if it exists.")
@click.option(
    "--responses",
    multiple=True,
    metavar="FILE",
    help="A pyloom model-responses backup to join (repeatable); model_responses-*.json files beside FILE are found without it.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=IMPORT_MAX_BYTES,
    show_default="100 MB",
    help="Refuse a FILE (or standard input, or a response file) larger than this.",
)
@click.option("--stay", is_flag=True, help="Keep the cursor where it is.")
def import_cmd(
    source: str,
    fmt: str | None,
    parent: str | None,
    new_path: str | None,
    force: bool,
    responses: tuple[str, ...],
    max_bytes: int,
    stay: bool,
) -> None:
    """Bring another loom tool's tree (FILE, or '-' for standard input) into the document.

    The format is detected from the file's structure: OpenLoom, the original Python
    loom (with its model-response backups), Loomsidian (data.json or one note),
    basemode-loom (JSON export or its SQLite store), MiniLoom, Exoloom, Bonsai,
    nanoloom, or another loom document / JSONL export. The import is one undoable
    step; fields loom has no place for are kept in each node's meta.import. A file
    that cannot be read changes nothing. FILE must be a regular file (pipes and
    devices come in through '-') of at most --max-bytes; an import may hold at most
    8 times what it read. --new also makes OUT the directory's current document.

    \b
    Examples:
      loom import chat.openloom.json --new chat.loom.json
      loom import tree.json --parent a1b2            # graft under a node
      loom import teleology.json --responses backups/model_responses-2023-02-14.json
      loom import data.json --format loomsidian --json
    """
    from loom import formats
    from loom.formats.forest import graft

    if new_path is not None and parent is not None:
        raise click.UsageError(
            "--parent cannot be combined with --new (a new document has no nodes yet)"
        )
    if source == "-":
        raw = sys.stdin.buffer.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise BadInput(
                f"standard input: more than the {size_text(max_bytes)} limit "
                "(raise it with --max-bytes)"
            )
        forest = formats.read_bytes(
            raw, "standard input", format=fmt, responses=responses, max_bytes=max_bytes
        )
    else:
        forest = formats.read(source, format=fmt, responses=responses, max_bytes=max_bytes)
    switched = None
    if new_path is not None:
        doc = Document.new()
        roots = graft(doc, forest, header=True)
        store.create(new_path, doc, overwrite=force)
        switched = _switch_to(new_path)
        target = Path(new_path)
    else:
        with write_doc() as doc:
            under = doc.resolve(parent).id if parent else None
            roots = graft(doc, forest, under, move_cursor=not stay)
        target = doc_path()
    if json_mode():
        emit(
            "import",
            **payloads.imported(forest, source, doc, target, roots, current=switched is not None),
        )
        return
    _notes(forest.notes)
    if switched is not None:
        _notes([switched])
    if stdout_is_terminal():
        out(
            f"imported {len(forest)} node(s) in {len(roots)} tree(s) from {source} ({forest.format}) into {target}"
        )
    else:
        for root in roots:
            out(root)


def _switch_to(path: str) -> str:
    """Make `path` the directory's current document; what to tell the user about it."""
    before = workspace.remembered()
    workspace.remember(path)
    env = os.environ.get("LOOM_FILE")
    if env:
        return f"{path} is now this directory's document, but $LOOM_FILE ({env}) still chooses the one commands use"
    if before is not None and before != Path(path).resolve():
        return f"{path} is now this directory's current document (it was {before})"
    return f"{path} is now this directory's current document"


# ---- export ---------------------------------------------------------------------------------


def _format_for(output: str | None, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    guessed = format_for_name(output or "")
    if guessed is None:
        raise click.UsageError(f"name the format with --format ({', '.join(EXPORT_FORMATS)})")
    return guessed


@command(cli, "export")
@click.argument("node", required=False, metavar="[NODE]")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    help="Output format (default: from -o's name).",
)
@click.option("-o", "--output", metavar="PATH", help="Write to PATH instead of standard output.")
@click.option("--force", is_flag=True, help="With -o: replace PATH even if it is a loom document.")
def export_cmd(node: str | None, fmt: str | None, output: str | None, force: bool) -> None:
    """Write the document (or part of it) in another format.

    text and markdown write the branch ending at NODE (default: the cursor). The
    tree formats write the whole forest, or NODE's subtree together with the chain
    of its ancestors: openloom, pyloom, loomsidian (one note), basemode (JSON),
    jsonl (one node per line), loom (a standalone document) and html (one
    self-contained page to browse the tree, with no network access). Formats
    that hold one tree need NODE when the document has several. OpenLoom and
    Loomsidian have no deleted state: deleted nodes are left out, and what they
    have no field for (tags, notes, token probabilities, generation records…)
    goes in each node's "loom" field, which loom reads back; a note says so. -o never writes
    over the document itself (or its lock and backup files), and replaces an
    existing loom document only with --force.

    \b
    Examples:
      loom export --format text > story.txt
      loom export -o tree.html                 # format from the name
      loom export --format openloom a1b2 -o chat.openloom.json
      loom export --format jsonl | jq -r .text
    """
    from loom import formats

    kind = _format_for(output, fmt)
    path = (
        None
        if output is None or output == "-"
        else formats.export_target(output, doc_path(), force=force)
    )
    doc = read_doc()
    target = doc.resolve(node).id if node is not None else None
    payload = formats.export(doc, kind, target)
    notes = formats.export_notes(doc, kind, target)
    if json_mode():
        answer = {
            **payloads.exported(doc, kind, target, len(payload), notes, fields()),
            "cursor": doc.cursor_id,
        }
    if path is None:
        if kind == "html" and stdout_is_terminal() and not json_mode():
            raise click.UsageError(
                "refusing to print HTML to the terminal: pass -o FILE.html or redirect the output"
            )
        if json_mode():
            emit("export", **answer, content=payload.decode("utf-8"))
            return
        _notes(notes)
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
        return
    files.write_atomic(path, payload)
    if json_mode():
        emit("export", **answer, output=str(path.resolve()))
        return
    _notes(notes)
    if stdout_is_terminal():
        out(f"wrote {output} ({kind}, {len(payload)} bytes)")


# ---- ingest ---------------------------------------------------------------------------------


@command(cli, "ingest")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option(
    "-p",
    "--parent",
    metavar="NODE",
    help="Add under NODE ('@' for the cursor) instead of as new roots.",
)
@click.option(
    "--chunk", type=click.Choice(CHUNK_MODES), help="Split each source into a chain of nodes."
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    default=MAX_BYTES,
    show_default="20 MB",
    help="Refuse sources larger than this.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=INGEST_DEADLINE,
    show_default="120",
    metavar="SECONDS",
    help="Give up on a URL that is not downloaded within this many seconds in all.",
)
@click.option("--stay", is_flag=True, help="Keep the cursor where it is.")
def ingest_cmd(
    sources: tuple[str, ...],
    parent: str | None,
    chunk: str | None,
    max_bytes: int,
    timeout: float,
    stay: bool,
) -> None:
    """Bring in text: files, directories (recursively), '-' (standard input) or URLs.

    Text and Markdown must be UTF-8; HTML pages are reduced to their readable
    text, PDFs to their text. Each source becomes a new root (or a child of
    --parent), or with --chunk a chain of nodes split at paragraphs or headings.
    Every node records its source in meta.source (URLs without user, password or
    query). A URL must be downloaded within --timeout seconds in all, and waits
    at most 30 seconds for any one reply. All sources are read before the
    document changes: one bad source stops the ingest and nothing is written.
    Directories skip hidden entries and files that are not text, with a note.

    \b
    Examples:
      loom ingest notes.md
      loom ingest https://example.com/essay --chunk headings
      loom ingest drafts/ --parent a1b2
      pbpaste | loom ingest - --chunk paragraphs
    """
    from loom import ingest

    gathered = ingest.gather(sources, max_bytes=max_bytes, deadline=timeout)
    with write_doc() as doc:
        under = doc.resolve(parent).id if parent else None
        chains = ingest.add(doc, gathered.sources, parent=under, chunk=chunk, move_cursor=not stay)
    if json_mode():
        emit(
            "ingest",
            sources=[
                {**s.meta(), "ids": chain}
                for s, chain in zip(gathered.sources, chains, strict=True)
            ],
            skipped=gathered.skipped,
            cursor=doc.cursor_id,
        )
        return
    _notes(gathered.skipped)
    count = sum(len(c) for c in chains)
    if stdout_is_terminal():
        out(f"ingested {len(chains)} source(s) as {count} node(s)")
    else:
        for chain in chains:
            out(chain[0])
