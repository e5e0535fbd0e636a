"""Bring outside text into a document: files, directories, standard input and web pages.

Every source is read and turned into text before the document is touched, so a bad
source stops the whole ingest with one line naming it and nothing is written.
Text files must be UTF-8 (or carry a UTF-16 BOM); HTML is reduced to its readable
text (as Markdown) with trafilatura; PDFs are read with pypdf. Directories are
walked in sorted order, skipping hidden entries, binary files and files that are
not text, with a note for each. A source can become one node or a chain of nodes
(by paragraphs or by Markdown headings) whose joined text is exactly the source's
text. Each node records where it came from in `meta.source`; a URL is recorded
(and named in messages) without its credentials, query or fragment.

trafilatura, pypdf and httpx2 are imported only when a source needs them.
"""

from __future__ import annotations

import io
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

from loom import files, ops
from loom.document import Document, now
from loom.errors import LoomError
from loom.files import size_text
from loom.journal import transaction
from loom.redact import redact, safe_url

if TYPE_CHECKING:
    import httpx2

MAX_BYTES = 20 * 1024 * 1024
TIMEOUT = 30.0  # the longest wait for any one step (connecting, the next bytes)
DEADLINE = 120.0  # the longest a whole download may take, however it trickles in
CHUNK_MODES = ("paragraphs", "headings")
_SNIFF = 8192
_HTML_START = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)
_TEXT_SUFFIXES = {".md": "text/markdown", ".markdown": "text/markdown"}
_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


class IngestError(LoomError):
    """A source that cannot be brought in: missing, too big, binary, not text, unreachable."""

    code = "bad_source"


@dataclass
class Source:
    """One source's text and where it came from."""

    uri: str
    text: str
    content_type: str
    bytes: int
    retrieved_at: str = field(default_factory=now)
    title: str | None = None
    final_uri: str | None = None  # where a URL redirected to

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uri": self.uri,
            "retrieved_at": self.retrieved_at,
            "content_type": self.content_type,
            "bytes": self.bytes,
        }
        if self.title:
            out["title"] = self.title
        if self.final_uri and self.final_uri != self.uri:
            out["final_uri"] = self.final_uri
        return out


@dataclass
class Gathered:
    sources: list[Source] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one note per file left out of a directory


# ---- reading sources ---------------------------------------------------------------------


def is_url(spec: str) -> bool:
    return spec.lower().startswith(("http://", "https://"))


def gather(
    specs: Sequence[str],
    *,
    max_bytes: int = MAX_BYTES,
    stdin: BinaryIO | None = None,
    client: httpx2.Client | None = None,
    deadline: float = DEADLINE,
) -> Gathered:
    """Read every source: '-' (standard input), a URL, a file or a directory (recursively).

    Each URL must be downloaded within `deadline` seconds.
    """
    out = Gathered()
    for spec in specs:
        if spec == "-":
            out.sources.append(read_stream(stdin or sys.stdin.buffer, max_bytes=max_bytes))
        elif is_url(spec):
            out.sources.append(
                read_url(spec, max_bytes=max_bytes, client=client, deadline=deadline)
            )
        else:
            path = Path(spec)
            if path.is_dir():
                _walk(path, max_bytes, out)
            else:
                out.sources.append(read_file(path, max_bytes=max_bytes))
    return out


def _walk(folder: Path, max_bytes: int, out: Gathered) -> None:
    found: list[Path] = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(top) / f for f in names if not f.startswith("."))
    found.sort(key=lambda p: p.relative_to(folder).parts)
    before = len(out.sources)
    for path in found:
        try:
            out.sources.append(read_file(path, max_bytes=max_bytes))
        except IngestError as exc:
            out.skipped.append(f"skipped {exc.message}")
    if len(out.sources) == before:
        raise IngestError(f"{folder}: no readable text files in this directory")


def _too_big(name: str, size: int, max_bytes: int) -> IngestError:
    return IngestError(
        f"{name}: {size_text(size)}, over the {size_text(max_bytes)} limit (raise it with --max-bytes)"
    )


def read_file(path: Path, *, max_bytes: int = MAX_BYTES) -> Source:
    try:
        # A FIFO or a device (/dev/zero) is refused before it is read: '-' is for streams.
        data = files.read_bytes(
            path, limit=max_bytes, what="file", note=" (raise it with --max-bytes)"
        )
    except LoomError as exc:
        raise IngestError(exc.message) from None
    suffix = path.suffix.lower()
    if suffix in _HTML_SUFFIXES:
        hint = "text/html"
    elif suffix == ".pdf":
        hint = "application/pdf"
    else:
        hint = _TEXT_SUFFIXES.get(suffix, "")
    return _to_source(str(path), path.resolve().as_uri(), data, hint, charset=None)


def read_stream(
    stream: BinaryIO, *, max_bytes: int = MAX_BYTES, name: str = "standard input"
) -> Source:
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise IngestError(
            f"{name}: more than the {size_text(max_bytes)} limit (raise it with --max-bytes)"
        )
    return _to_source(name, "stdin:", data, "", charset=None)


def read_url(
    url: str,
    *,
    max_bytes: int = MAX_BYTES,
    client: httpx2.Client | None = None,
    deadline: float = DEADLINE,
) -> Source:
    """GET a URL (following redirects) with a size cap and a deadline, and reduce it to text.

    The whole download, redirects included, must end within `deadline` seconds: a
    server that sends one byte a second is cut off then, not read forever. The request
    uses the URL as given (credentials and all); everything recorded or printed uses
    `safe_url`, without userinfo, query or fragment.
    """
    import httpx2  # only when a URL is ingested

    from loom import __version__

    shown = safe_url(url)
    own = client is None
    wait = min(TIMEOUT, deadline)
    session = client or httpx2.Client(
        follow_redirects=True,
        timeout=httpx2.Timeout(wait),
        headers={"User-Agent": f"loom/{__version__} (ingest)"},
    )
    too_slow = IngestError(
        f"{shown}: not downloaded within {deadline:g}s (raise it with --timeout)"
    )
    end = time.monotonic() + deadline
    try:
        with session.stream("GET", url, timeout=wait) as response:
            if response.status_code >= 400:
                reason = response.reason_phrase or ""
                raise IngestError(f"{shown}: HTTP {response.status_code} {reason}".rstrip())
            declared = response.headers.get("content-length")
            if declared and declared.isdecimal() and int(declared) > max_bytes:
                raise _too_big(shown, int(declared), max_bytes)
            # Each read may wait only for what is left of the deadline (httpx reads the
            # request's "timeout" extension at every read); the loop checks it too.
            timeouts = response.request.extensions.get("timeout")
            body = bytearray()
            for piece in response.iter_bytes():
                body.extend(piece)
                if len(body) > max_bytes:
                    raise IngestError(
                        f"{shown}: more than the {size_text(max_bytes)} limit (raise it with --max-bytes)"
                    )
                left = end - time.monotonic()
                if left <= 0:
                    raise too_slow
                if isinstance(timeouts, dict):
                    timeouts["read"] = min(wait, left)
            content_type = response.headers.get("content-type", "")
            charset = response.charset_encoding
            final = safe_url(str(response.url))
    except httpx2.TimeoutException:
        if time.monotonic() >= end - 0.05:
            raise too_slow from None
        raise IngestError(f"{shown}: no response for {wait:g}s") from None
    except httpx2.TooManyRedirects:
        raise IngestError(f"{shown}: too many redirects") from None
    except (httpx2.InvalidURL, httpx2.UnsupportedProtocol) as exc:
        reason = _without_secrets(str(exc), url)
        raise IngestError(f"{shown}: not a URL loom can fetch ({reason})") from None
    except httpx2.HTTPError as exc:
        reason = _without_secrets(str(exc) or type(exc).__name__, url)
        raise IngestError(f"{shown}: cannot fetch: {reason}") from None
    finally:
        if own:
            session.close()
    media = content_type.split(";", 1)[0].strip().lower()
    source = _to_source(shown, shown, bytes(body), media, charset=charset)
    source.final_uri = final
    return source


def _without_secrets(text: str, url: str) -> str:
    """An error message from the HTTP client with the URL's credentials and query masked."""
    text = text.replace(url, safe_url(url))
    try:
        parts = urlsplit(url)
        pieces = [parts.username, parts.password, parts.query, parts.fragment]
        pieces += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    except ValueError:
        return text
    # Longest first, so a query is masked whole before its values are.
    secrets = sorted({p for p in pieces if p and len(p) > 1}, key=len, reverse=True)
    return redact(text, secrets)


# ---- bytes to text -------------------------------------------------------------------------


def _looks_binary(data: bytes) -> bool:
    head = data[:_SNIFF]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return False  # UTF-16 text (with its BOM) is full of NULs; decoding decides
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    return bool(head) and controls / len(head) > 0.1


def _to_source(name: str, uri: str, data: bytes, hint: str, *, charset: str | None) -> Source:
    if not data:
        raise IngestError(f"{name}: empty")
    head = data[:_SNIFF]
    if hint == "application/pdf" or head.startswith(b"%PDF-"):
        text, title = _pdf_text(name, data)
        return Source(uri, text, "application/pdf", len(data), title=title)
    if hint in ("text/html", "application/xhtml+xml") or (
        not hint.startswith("text/plain") and _HTML_START.match(head)
    ):
        text, title = _html_text(name, data, charset, uri)
        return Source(uri, text, "text/html", len(data), title=title)
    if _looks_binary(data):
        what = f"binary content ({hint})" if hint else "a binary file"
        raise IngestError(f"{name}: {what}, not text")
    return Source(
        uri,
        _decode(name, data, charset),
        hint or "text/plain",  # as declared (JSON, XML, …), or plain text when unknown
        len(data),
    )


def _decode(name: str, data: bytes, charset: str | None) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif charset:
        encoding = charset
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except LookupError:
        raise IngestError(f"{name}: unknown text encoding {charset!r}") from None
    except UnicodeDecodeError as exc:
        declared = f"the declared {charset}" if charset else "UTF-8"
        raise IngestError(
            f"{name}: not {declared} text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _pdf_text(name: str, data: bytes) -> tuple[str, str | None]:
    try:
        from pypdf import PdfReader
    except ImportError:  # pragma: no cover - pypdf is a dependency
        raise IngestError(f"{name}: reading PDFs needs pypdf (pip install pypdf)") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(f"{name}: the PDF is encrypted")
        pages = [(page.extract_text() or "").strip("\n") for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except IngestError:
        raise
    except Exception as exc:  # pypdf raises many kinds of errors on damaged files
        raise IngestError(f"{name}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise IngestError(f"{name}: the PDF has no extractable text (scanned images?)")
    return text + "\n", str(title) if title else None


class _TextOnly(HTMLParser):
    """Visible text of an HTML page, for pages trafilatura finds no article in."""

    _SKIP = frozenset(("script", "style", "noscript", "template", "head", "svg"))
    _BLOCK = frozenset(
        (
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "section",
            "article",
            "pre",
        )
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)

    def text(self) -> str:
        lines = [" ".join(line.split()) for line in "".join(self.parts).splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _html_text(name: str, data: bytes, charset: str | None, uri: str) -> tuple[str, str | None]:
    import trafilatura  # only when HTML is ingested

    markup: str | bytes = data
    if charset:
        markup = _decode(name, data, charset)
    url = uri if is_url(uri) else None
    try:
        text = trafilatura.extract(
            markup, url=url, output_format="markdown", include_comments=False, include_tables=True
        )
        metadata = trafilatura.extract_metadata(markup, default_url=url)
    except Exception as exc:  # a parser failure on hostile markup is a bad source, not a crash
        raise IngestError(f"{name}: cannot read this HTML ({type(exc).__name__})") from None
    title = metadata.title if metadata is not None and metadata.title else None
    if not text or not text.strip():
        parser = _TextOnly()
        source = markup if isinstance(markup, str) else data.decode("utf-8", "replace")
        parser.feed(source)
        parser.close()
        text = parser.text()
    if not text.strip():
        raise IngestError(f"{name}: the page has no readable text")
    return text.strip("\n") + "\n", title


# ---- chunks ---------------------------------------------------------------------------------


def chunks(text: str, mode: str | None) -> list[str]:
    """Split text into pieces whose concatenation is exactly `text`.

    "paragraphs": at blank lines (each piece keeps the blank lines after it);
    "headings": before each Markdown heading (ATX `#` or setext underline), never
    inside a fenced code block. None: one piece.
    """
    if mode is None or not text:
        return [text]
    if mode == "paragraphs":
        pieces: list[str] = []
        start = 0
        for match in _PARAGRAPH_BREAK.finditer(text):
            if text[start : match.start()].strip():
                pieces.append(text[start : match.end()])
                start = match.end()
        if start < len(text):
            if pieces and not text[start:].strip():
                pieces[-1] += text[start:]
            else:
                pieces.append(text[start:])
        return pieces or [text]
    if mode == "headings":
        lines = text.splitlines(keepends=True)
        cuts: list[int] = []
        offset = 0
        fence: str | None = None
        for i, line in enumerate(lines):
            fenced = _FENCE.match(line)
            if fenced:
                marker = fenced.group(1)[0] * 3
                if fence is None:
                    fence = marker
                elif line.lstrip().startswith(fence):
                    fence = None
            elif fence is None:
                setext = (
                    i + 1 < len(lines)
                    and line.strip()
                    and _SETEXT_UNDERLINE.match(lines[i + 1])
                    and not _ATX_HEADING.match(line)
                )
                if _ATX_HEADING.match(line) or setext:
                    cuts.append(offset)
            offset += len(line)
        bounds = [c for c in cuts if c > 0]
        pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
        return [p for p in pieces if p] or [text]
    raise ValueError(f"unknown chunk mode {mode!r} (expected one of: {', '.join(CHUNK_MODES)})")


# ---- into the document ----------------------------------------------------------------------


def add(
    doc: Document,
    sources: Sequence[Source],
    *,
    parent: str | None = None,
    chunk: str | None = None,
    move_cursor: bool = True,
) -> list[list[str]]:
    """Add each source as a node (or a chain of chunks) under `parent` or as new roots.

    One journal transaction for all of them. Returns the node ids of each source's
    chain, in order; the cursor moves to the end of the last chain.
    """
    if chunk is not None and chunk not in CHUNK_MODES:
        raise ValueError(f"unknown chunk mode {chunk!r}")
    if parent is not None:
        doc.node(parent)
    chains: list[list[str]] = []
    what = f"{len(sources)} source(s)" if len(sources) != 1 else sources[0].uri
    with transaction(doc, "ingest", f"ingest {what}"):
        for source in sources:
            pieces = chunks(source.text, chunk)
            chain: list[str] = []
            anchor = parent
            for i, piece in enumerate(pieces):
                meta = {"source": source.meta()}
                if len(pieces) > 1:
                    meta["source"].update(
                        {"chunk": i + 1, "chunks": len(pieces), "chunked_by": chunk}
                    )
                node = ops.add_child(
                    doc, anchor, piece, kind="import", meta=meta, move_cursor=False, visited=True
                )
                chain.append(node.id)
                anchor = node.id
            chains.append(chain)
        if move_cursor and chains and chains[-1]:
            ops.goto(doc, chains[-1][-1])
    return chains


def ingest(
    doc: Document,
    specs: Sequence[str],
    *,
    parent: str | None = None,
    chunk: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> tuple[Gathered, list[list[str]]]:
    """Read `specs` (paths, URLs, '-') and add them to `doc`; see `gather` and `add`."""
    gathered = gather(specs, max_bytes=max_bytes)
    return gathered, add(doc, gathered.sources, parent=parent, chunk=chunk)
