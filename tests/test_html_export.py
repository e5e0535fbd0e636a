"""The HTML export: one self-contained page, safe with hostile text, browsed in real Chromium."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom import formats, ops
from loom.document import Document

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = ' </script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> <!-- & &amp; \u2028'


def sample() -> tuple[Document, dict[str, str]]:
    """A small tree with a generated branch (logprobs), hostile text, a chat and bookmarks."""
    doc = Document.new(
        title="<script>alert(1)</script> Tides & <Things>", description="A <b>test</b> loom"
    )
    root = ops.add_child(doc, None, "Once upon a time")
    fox = ops.add_child(
        doc,
        root.id,
        " there was a fox",
        kind="model",
        meta={
            "gen": {
                "model": "m-A",
                "params": {"temperature": 0.8, "top_p": 0.95},
                "finish_reason": "length",
            },
            "logprobs": {
                "source": "post-sampling",
                "tokens": [" there", " was", " a", " fox"],
                "lp": [-0.05, -0.4, -2.5, -6.0],
                "top": [
                    [[" there", -0.05]],
                    [[" was", -0.4], [" lived", -1.3]],
                    [],
                    [[" fox", -6.0], [" cat", -0.2]],
                ],
            },
        },
    )
    ops.set_bookmark(doc, fox.id, title="Fox branch")
    flew = ops.add_child(doc, fox.id, " who could fly.")
    hostile = ops.add_child(doc, root.id, XSS)
    ops.tag(doc, hostile.id, add=["xss"])
    ops.set_note(doc, hostile.id, "<b>not bold</b>")
    ask = ops.add_child(doc, root.id, "\nHello?", kind="user")
    reply = ops.add_child(doc, ask.id, "\nHi.", kind="assistant")
    ops.goto(doc, flew.id)
    return doc, {
        "root": root.id,
        "fox": fox.id,
        "flew": flew.id,
        "xss": hostile.id,
        "ask": ask.id,
        "reply": reply.id,
    }


def test_page_is_self_contained_and_escapes_text() -> None:
    doc, _ = sample()
    page = formats.export(doc, "html").decode("utf-8")
    assert page.count("<script") == 2  # the data block and the viewer, nothing from the text
    assert "window.__pwned" in page  # the text travels, but only inside the JSON...
    assert "</script><script>window" not in page and "<img" not in page  # ...never as markup
    assert "<title>&lt;script&gt;alert(1)&lt;/script&gt; Tides &amp; &lt;Things&gt;</title>" in page
    for url in ("http://", "https://", "//cdn"):
        assert url not in page
    script = re.search(r"<script>(.*?)</script>", page, re.DOTALL)
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert script and style

    def digest(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    assert "default-src 'none'" in csp.group(1)
    assert f"script-src 'sha256-{digest(script.group(1))}'" in csp.group(1)
    assert f"style-src 'sha256-{digest(style.group(1))}'" in csp.group(1)


def test_payload_holds_generation_and_probabilities() -> None:
    from loom.formats import html

    doc, ids = sample()
    data = html.payload(doc)
    nodes = {n["i"]: n for n in data["nodes"]}
    fox = nodes[ids["fox"]]
    assert fox["m"]["model"] == "m-A" and fox["b"] == "Fox branch"
    assert fox["lp"][0] == [" there", " was", " a", " fox"]
    assert data["cursor"] == [n["i"] for n in data["nodes"]].index(ids["flew"])


# ---- in a browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed"
    )
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class Page:
    """A page of the export, recording every request and every script error."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page = browser.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url)
        self.page.wait_for_selector("#tree .row")

    def branch(self) -> str:
        return str(self.page.locator("#branch").text_content())

    def click_row(self, node_id: str) -> None:
        """Click a node's row (scrolled to the top of the tree, where the tests' rows are)."""
        index = self.index_of(node_id)
        self.page.locator("#tree").evaluate("tree => { tree.scrollTop = 0; }")
        row = self.page.locator(f'#tree .row[data-i="{index}"]')
        row.wait_for()
        row.locator(".tx").click()

    def index_of(self, node_id: str) -> int:
        return int(
            self.page.evaluate(
                "id => JSON.parse(document.getElementById('loom-data').textContent).nodes.findIndex(n => n.i === id)",
                node_id,
            )
        )


def test_browse_the_tree_in_chromium(browser: Any, tmp_path: Path) -> None:
    doc, ids = sample()
    path = tmp_path / "tree.html"
    path.write_bytes(formats.export(doc, "html"))
    view = Page(browser, path)
    page = view.page
    assert page.title() == "<script>alert(1)</script> Tides & <Things>"
    assert view.branch() == doc.full_text(ids["flew"])  # opens on the cursor's branch

    view.click_row(ids["xss"])  # hostile text shows as text and runs nothing
    assert view.branch() == doc.full_text(ids["xss"])
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("img").count() == 0
    assert page.locator("#info").text_content().count("#xss") == 1
    assert "<b>not bold</b>" in str(page.locator("#info .note").text_content())

    view.click_row(ids["root"])
    page.locator("#info .kids li", has_text="Hello?").click()  # a continuation from the list
    assert view.branch() == doc.full_text(ids["ask"])
    assert page.locator("#branch div.seg[data-role='user']").count() == 1
    page.keyboard.press("ArrowDown")
    assert view.branch() == doc.full_text(ids["reply"])
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowLeft")
    assert view.branch() == doc.full_text(ids["xss"])

    page.locator("#marks .mark", has_text="Fox branch").click()  # a bookmark
    assert view.branch() == doc.full_text(ids["fox"])
    tokens = page.locator("#branch .tok")
    assert tokens.count() == 4
    colours = [tokens.nth(i).evaluate("t => getComputedStyle(t).backgroundColor") for i in range(4)]
    assert colours[0] != colours[3]  # an unlikely token stands out
    assert "p = 0.002" in str(tokens.nth(3).get_attribute("title")) and '" cat"' in str(
        tokens.nth(3).get_attribute("title")
    )
    info = str(page.locator("#info").text_content())
    assert "m-A" in info and "temperature" in info and "0.8" in info

    page.locator("#tree .row .tg").first.click()  # collapse the root
    assert page.locator("#tree .row").count() == 1
    assert view.errors == []
    assert view.requests == [view.url]  # the page itself, and nothing else


def test_ten_thousand_nodes(browser: Any, tmp_path: Path) -> None:
    """A 10k-deep chain plus a wide fan: no recursion, a virtual tree, the deepest branch shown."""
    doc = Document.new(title="big")
    deepest: str | None = None
    for i in range(10_000):
        deepest = ops.add_child(doc, deepest, f"{i % 10}", move_cursor=False).id
    root = doc.root_ids[0]
    for i in range(300):
        ops.add_child(doc, root, f"fan {i}", move_cursor=False)
    assert deepest is not None
    ops.goto(doc, deepest)
    path = tmp_path / "big.html"
    path.write_bytes(formats.export(doc, "html"))
    view = Page(browser, path)
    page = view.page
    assert view.branch() == doc.full_text(deepest) and len(view.branch()) == 10_000
    # Every open row has its place, but only those in view are in the DOM.
    assert page.locator("#spacer").evaluate("s => s.style.height") == f"{(10_000 + 300) * 22}px"
    assert page.locator("#tree .row").count() < 200
    assert page.locator("#tree .row.sel").get_attribute("data-i") == str(view.index_of(deepest))
    view.click_row(root)
    assert view.branch() == doc.full_text(root)
    page.keyboard.press("ArrowDown")  # back along the remembered path
    assert view.branch() == doc.full_text(doc.nodes[root]["children"][0])
    assert view.errors == [] and view.requests == [view.url]
