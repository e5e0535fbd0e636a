"""Ingesting files, directories, standard input and URLs (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interop_support import cli
from loom import ingest, journal, ops
from loom.document import Document
from loom.ingest import IngestError, chunks

ARTICLE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>The Quiet Harbour</title>
<script>evil("this must never be ingested")</script></head>
<body>
<nav><a href="/">Home</a> <a href="/subscribe">Subscribe to our newsletter</a></nav>
<article>
<h1>The Quiet Harbour</h1>
<p>At dawn the fishing boats slipped out past the breakwater, their engines muttering in the fog.
The harbour master counted them from his window, as he had every morning for thirty years.</p>
<h2>The Return</h2>
<p>By noon the first boats were back, low in the water and trailed by gulls. Crates of herring
were passed hand to hand along the quay while the auctioneer called out prices nobody argued with.</p>
<p>Only the smallest boat, the <em>Marguerite</em>, had not come home, and the old man kept watching the fog.</p>
</article>
<footer>We use cookies to improve your experience. Accept all cookies?</footer>
</body></html>
"""


def make_pdf(lines: list[str]) -> bytes:
    """A minimal valid PDF with one page of Helvetica text, byte offsets and all."""
    content = (
        b"BT /F1 18 Tf 72 720 Td 22 TL "
        + b" ".join(b"(%s) Tj T*" % line.encode("latin-1") for line in lines)
        + b" ET"
    )
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
    * 4
)
ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/article.html": (200, {"Content-Type": "text/html; charset=utf-8"}, ARTICLE.encode()),
    "/missing": (404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>"),
    "/image.png": (200, {"Content-Type": "image/png"}, PNG),
    "/huge.txt": (200, {"Content-Type": "text/plain"}, b"x" * 5000),
    "/latin1.txt": (200, {"Content-Type": "text/plain"}, "café crème brûlée".encode("latin-1")),
    "/latin1-declared.txt": (
        200,
        {"Content-Type": "text/plain; charset=iso-8859-1"},
        "café crème".encode("latin-1"),
    ),
    "/notes.md": (
        200,
        {"Content-Type": "text/markdown; charset=utf-8"},
        b"# One\n\nfirst\n\n# Two\n\nsecond\n",
    ),
    "/doc.pdf": (
        200,
        {"Content-Type": "application/pdf"},
        make_pdf(["Hello from a PDF", "Second line"]),
    ),
    "/redirect": (302, {"Location": "/article.html"}, b""),
    "/redirect-secret": (302, {"Location": "/article.html?session=REDIRECT-SECRET#frag"}, b""),
}
SEEN_AUTH: list[str] = []  # Authorization headers the server received


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # The client may stop reading at its size cap, as it should.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._respond()

    def _respond(self) -> None:
        SEEN_AUTH.append(self.headers.get("Authorization", ""))
        path = self.path.split("?", 1)[0]
        if path == "/stream":  # no Content-Length: the cap must hold while reading
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(50):
                piece = b"y" * 100
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        if path in ("/trickle", "/stall"):  # one byte every 0.2 s, or headers then silence
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(300):
                if path == "/trickle":
                    self.wfile.write(b"1\r\nz\r\n")
                    self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
            return
        status, headers, body = ROUTES.get(path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---- URLs -------------------------------------------------------------------------------------


def test_html_article_becomes_readable_text(server: str) -> None:
    source = ingest.read_url(f"{server}/article.html")
    assert "fishing boats slipped out past the breakwater" in source.text
    assert "Marguerite" in source.text and "The Return" in source.text
    for boilerplate in ("evil(", "cookies", "Subscribe to our newsletter"):
        assert boilerplate not in source.text
    meta = source.meta()
    assert meta["uri"] == f"{server}/article.html"
    assert meta["content_type"] == "text/html"
    assert meta["bytes"] == len(ARTICLE.encode())
    assert meta["retrieved_at"].endswith("Z")
    assert meta["title"] == "The Quiet Harbour"


def test_redirects_are_followed_and_recorded(server: str) -> None:
    source = ingest.read_url(f"{server}/redirect")
    assert "breakwater" in source.text
    assert source.meta()["final_uri"] == f"{server}/article.html"


def test_text_pdf_and_declared_charsets(server: str) -> None:
    assert ingest.read_url(f"{server}/latin1-declared.txt").text == "café crème"
    assert ingest.read_url(f"{server}/notes.md").content_type == "text/markdown"
    pdf = ingest.read_url(f"{server}/doc.pdf")
    assert "Hello from a PDF" in pdf.text and "Second line" in pdf.text
    assert pdf.content_type == "application/pdf"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing", "HTTP 404 Not Found"),
        ("/image.png", "binary content (image/png), not text"),
        ("/huge.txt", "4.9 KB, over the 1000 bytes limit (raise it with --max-bytes)"),
        ("/stream", "more than the 1000 bytes limit"),
        ("/latin1.txt", "not UTF-8 text (byte 0xe9 at offset 3)"),
    ],
)
def test_bad_urls(server: str, path: str, message: str) -> None:
    with pytest.raises(IngestError) as caught:
        ingest.read_url(server + path, max_bytes=1000)
    assert message in caught.value.message and "\n" not in caught.value.message


def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(IngestError, match="cannot fetch") as caught:
        ingest.read_url(f"http://user:PW-SECRET@127.0.0.1:{port}/x?key=Q-SECRET")
    assert caught.value.message.startswith(f"http://127.0.0.1:{port}/x: cannot fetch")
    assert "SECRET" not in caught.value.message


@pytest.mark.parametrize("path", ["/trickle", "/stall"])
def test_a_slow_server_is_cut_off_at_the_deadline(server: str, path: str) -> None:
    """Only a per-read timeout let a byte-a-second server be read for minutes."""
    with pytest.raises(IngestError) as caught:
        ingest.read_url(f"{server}{path}", deadline=1.0)
    assert caught.value.message == (
        f"{server}{path}: not downloaded within 1s (raise it with --timeout)"
    )


def test_ingest_timeout_flag(server: str, tmp_path: Path) -> None:
    assert cli(tmp_path, "new", "s.loom.json").code == 0
    result = cli(tmp_path, "ingest", f"{server}/trickle", "--timeout", "0.5")
    assert result.code == 1
    assert result.stderr.endswith("not downloaded within 0.5s (raise it with --timeout)\n")
    assert "--timeout" in cli(tmp_path, "ingest", "--help").stdout


# ---- credentials in URLs ----------------------------------------------------------------------


def _secret_url(server: str, path: str) -> str:
    """`server`/`path` with a user, a password, a query key and a fragment."""
    return server.replace("http://", "http://user:PW-SECRET@") + path + "?key=Q-SECRET&x=1#F-SECRET"


def test_urls_are_recorded_without_credentials_or_query(server: str) -> None:
    SEEN_AUTH.clear()
    source = ingest.read_url(_secret_url(server, "/article.html"))
    assert SEEN_AUTH and SEEN_AUTH[-1].startswith("Basic ")  # the request used them
    assert "breakwater" in source.text
    assert source.uri == f"{server}/article.html"
    assert "final_uri" not in source.meta()
    redirected = ingest.read_url(_secret_url(server, "/redirect-secret"))
    assert redirected.meta()["uri"] == f"{server}/redirect-secret"
    assert redirected.meta()["final_uri"] == f"{server}/article.html"
    for meta in (source.meta(), redirected.meta()):
        assert "SECRET" not in json.dumps(meta) and "user" not in json.dumps(meta)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing", "HTTP 404 Not Found"),
        ("/image.png", "binary content (image/png), not text"),
        ("/huge.txt", "over the 1000 bytes limit"),
        ("/stream", "more than the 1000 bytes limit"),
        ("/latin1.txt", "not UTF-8 text"),
    ],
)
def test_url_errors_never_show_credentials(server: str, path: str, message: str) -> None:
    with pytest.raises(IngestError) as caught:
        ingest.read_url(_secret_url(server, path), max_bytes=1000)
    assert caught.value.message.startswith(f"{server}{path}: ")
    assert message in caught.value.message
    assert "SECRET" not in caught.value.message and "user" not in caught.value.message


def test_cli_ingest_never_stores_or_prints_credentials(tmp_path: Path, server: str) -> None:
    assert cli(tmp_path, "new", "doc.loom.json").code == 0
    doc = tmp_path / "doc.loom.json"
    good = cli(tmp_path, "ingest", _secret_url(server, "/redirect-secret"), "--json")
    assert good.code == 0, good.stderr
    assert good.json()["sources"][0]["uri"] == f"{server}/redirect-secret"
    human = cli(tmp_path, "ingest", _secret_url(server, "/notes.md"), "--chunk", "headings")
    assert human.code == 0, human.stderr
    bad = cli(tmp_path, "ingest", _secret_url(server, "/missing"))
    assert bad.stderr.strip() == f"loom: error: {server}/missing: HTTP 404 Not Found"
    bad_json = cli(tmp_path, "ingest", _secret_url(server, "/image.png"), "--json")
    assert bad_json.error()["error"]["code"] == "bad_source"
    log = cli(tmp_path, "log", "--json")
    assert log.code == 0, log.stderr
    for run in (good, human, bad, bad_json, log):
        assert "SECRET" not in run.stdout + run.stderr
    saved = doc.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob(".doc.loom.json.*"))
    assert b"SECRET" not in saved and b"user:" not in saved
    assert b"Marguerite" in doc.read_bytes()


# ---- files, directories, standard input ---------------------------------------------------------


def test_files_of_each_kind(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("plain text\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# Title\n\nbody\n", encoding="utf-8")
    (tmp_path / "c.html").write_text(ARTICLE, encoding="utf-8")
    (tmp_path / "d.pdf").write_bytes(make_pdf(["PDF words"]))
    (tmp_path / "e.txt").write_bytes("\ufeffbom text".encode())
    (tmp_path / "f.txt").write_bytes("utf16 text".encode("utf-16"))
    kinds = {p.name: ingest.read_file(p) for p in sorted(tmp_path.iterdir())}
    assert kinds["a.txt"].text == "plain text\n" and kinds["a.txt"].content_type == "text/plain"
    assert kinds["b.md"].content_type == "text/markdown"
    assert "breakwater" in kinds["c.html"].text and kinds["c.html"].content_type == "text/html"
    assert "PDF words" in kinds["d.pdf"].text
    assert kinds["e.txt"].text == "bom text" and kinds["f.txt"].text == "utf16 text"
    assert kinds["a.txt"].uri == (tmp_path / "a.txt").resolve().as_uri()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" * 10, "a binary file, not text"),
        ("latin.txt", "naïve".encode("latin-1"), "not UTF-8 text (byte 0xef at offset 2)"),
        ("empty.txt", b"", "empty"),
        ("big.txt", b"z" * 2048, "2.0 KB, over the 1.0 KB limit"),
        ("broken.pdf", b"%PDF-1.4\n garbage", "not a readable PDF"),
        ("scan.pdf", make_pdf([]), "no extractable text"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError) as caught:
        ingest.read_file(path, max_bytes=1024)
    assert message in caught.value.message and str(path) in caught.value.message


def test_devices_and_pipes_are_refused_without_reading(tmp_path: Path) -> None:
    """/dev/zero reports size 0 and never ends; a FIFO with no writer blocks an open()."""
    os.mkfifo(tmp_path / "fifo")
    for source in ("/dev/zero", str(tmp_path / "fifo")):
        with pytest.raises(IngestError, match="not a regular file"):
            ingest.gather([source])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        ingest.gather([str(tmp_path / "nope.txt")])


def test_directories_are_walked_in_order_skipping_what_is_not_text(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("bz", encoding="utf-8")
    (tmp_path / "b" / "a.txt").write_text("ba", encoding="utf-8")
    (tmp_path / "a.md").write_text("a", encoding="utf-8")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01\x02\x03" * 20)
    (tmp_path / ".hidden").write_text("secret", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]", encoding="utf-8")
    gathered = ingest.gather([str(tmp_path)])
    assert [s.text for s in gathered.sources] == ["a", "ba", "bz"]
    assert len(gathered.skipped) == 1 and "c.bin: a binary file, not text" in gathered.skipped[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IngestError, match="no readable text files"):
        ingest.gather([str(empty)])


def test_standard_input() -> None:
    gathered = ingest.gather(["-"], stdin=io.BytesIO(b"from a pipe\n"))
    assert gathered.sources[0].text == "from a pipe\n" and gathered.sources[0].uri == "stdin:"


# ---- chunks and nodes ----------------------------------------------------------------------------


def test_paragraph_and_heading_chunks() -> None:
    text = "Intro line.\n\n\nSecond para\nstill second.\n\n   Indented third.\n"
    assert chunks(text, "paragraphs") == [
        "Intro line.\n\n\n",
        "Second para\nstill second.\n\n",
        "   Indented third.\n",
    ]
    md = "Preface\n# One\nbody\n```\n# not a heading\n```\nTwo\n===\nmore\n## Three\n"
    assert chunks(md, "headings") == [
        "Preface\n",
        "# One\nbody\n```\n# not a heading\n```\n",
        "Two\n===\nmore\n",
        "## Three\n",
    ]
    assert chunks("no headings here", "headings") == ["no headings here"]


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(["a", " ", "\n", "#", "`", "=", "-", "\t", "é"]), max_size=200
    ),
    st.sampled_from(["paragraphs", "headings"]),
)
def test_chunks_are_lossless(text: str, mode: str) -> None:
    pieces = chunks(text, mode)
    assert "".join(pieces) == text
    assert all(pieces) or pieces == [""]


def test_add_builds_one_chain_per_source_in_one_step() -> None:
    doc = Document.new()
    anchor = ops.add_child(doc, None, "Sources:\n").id
    before = len(journal.undo_entries(doc))
    sources = [
        ingest.Source("file:///a.md", "# A\n\none\n\n# B\n\ntwo\n", "text/markdown", 20),
        ingest.Source("stdin:", "single", "text/plain", 6),
    ]
    chains = ingest.add(doc, sources, parent=anchor, chunk="headings")
    assert [len(c) for c in chains] == [2, 1]
    first, second = chains
    assert doc.nodes[first[0]]["parent"] == anchor and doc.nodes[first[1]]["parent"] == first[0]
    assert doc.full_text(first[-1]) == "Sources:\n# A\n\none\n\n# B\n\ntwo\n"
    rec = doc.nodes[first[1]]
    assert rec["kind"] == "import" and rec["visited"] is True
    assert rec["meta"]["source"]["uri"] == "file:///a.md"
    assert (rec["meta"]["source"]["chunk"], rec["meta"]["source"]["chunks"]) == (2, 2)
    assert doc.cursor_id == second[-1]
    assert len(journal.undo_entries(doc)) == before + 1
    journal.undo(doc)
    assert set(doc.nodes) == {anchor}


# ---- the command ----------------------------------------------------------------------------


def test_cli_ingest(tmp_path: Path, server: str) -> None:
    assert cli(tmp_path, "new", "doc.loom.json").code == 0
    (tmp_path / "notes.md").write_text("# One\n\nfirst\n\n# Two\n\nsecond\n", encoding="utf-8")
    result = cli(
        tmp_path, "ingest", "notes.md", f"{server}/article.html", "--chunk", "headings", "--json"
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert [len(s["ids"]) for s in report["sources"]] == [2, 2]
    assert report["sources"][1]["content_type"] == "text/html"
    tree = cli(tmp_path, "tree", "--all", "--json").json()
    assert len(tree["roots"]) == 2 and len(tree["nodes"]) == 4
    shown = cli(tmp_path, "show", "--raw").stdout
    assert "Marguerite" in shown


def test_cli_bad_source_writes_nothing(tmp_path: Path, server: str) -> None:
    assert cli(tmp_path, "new", "doc.loom.json", "--text", "keep").code == 0
    before = (tmp_path / "doc.loom.json").read_bytes()
    (tmp_path / "good.txt").write_text("fine", encoding="utf-8")
    result = cli(tmp_path, "ingest", "good.txt", f"{server}/missing")
    assert result.code == 1
    assert result.stderr.strip() == f"loom: error: {server}/missing: HTTP 404 Not Found"
    assert (tmp_path / "doc.loom.json").read_bytes() == before
    failed = cli(tmp_path, "ingest", f"{server}/image.png", "--json")
    assert json.loads(failed.stdout)["error"]["code"] == "bad_source"
    assert (tmp_path / "doc.loom.json").read_bytes() == before


def test_cli_directory_notes_skipped_files(tmp_path: Path) -> None:
    assert cli(tmp_path, "new", "doc.loom.json").code == 0
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "one.txt").write_text("one", encoding="utf-8")
    (folder / "blob.bin").write_bytes(b"\x00" * 64)
    result = cli(tmp_path, "ingest", "in", "--parent", "@")
    assert result.code == 1  # an empty document has no cursor for --parent @
    result = cli(tmp_path, "ingest", "in")
    assert (
        result.code == 0 and "loom: note: skipped" in result.stderr and "blob.bin" in result.stderr
    )
    assert cli(tmp_path, "show", "--raw").stdout == "one"
    piped = cli(tmp_path, "ingest", "-", "--parent", "@", input="and more")
    assert piped.code == 0 and cli(tmp_path, "show", "--raw").stdout == "oneand more"
