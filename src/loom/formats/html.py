"""The whole tree as one self-contained HTML file: a browsable, collapsible loom.

No network: CSS and JavaScript are inline and a Content-Security-Policy allows
only those two blocks (by hash), so the page works from file:// and requests
nothing. Document text is untrusted: it travels as JSON in a non-executable
script block (with `<`, `>` and `&` escaped so it cannot close the block), and the
page only ever puts it into the DOM through `textContent`. Every walk is a loop,
so 10k-node trees and 10k-deep chains render without recursion.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from typing import Any

import orjson

from loom.document import Document
from loom.formats.selection import gen_of, select

_STYLE = """
:root { --bg: #fbfaf7; --fg: #1f1d1a; --muted: #6b665e; --line: #e2ded6; --accent: #2f5d8a;
  --sel: #dbe7f3; --even: transparent; --odd: #f1ede4; --cur: #fff3c4; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #1b1a18; --fg: #e8e4dc; --muted: #a39d92; --line: #3a3732; --accent: #8fb8e0;
    --sel: #2d3e50; --odd: #26241f; --cur: #4a4020; }
}
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; }
#app { display: grid; grid-template-columns: minmax(260px, 34%) 1fr; height: 100vh; }
#side { border-right: 1px solid var(--line); display: flex; flex-direction: column; min-height: 0; }
#side h2, #main h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
  margin: 12px 12px 4px; }
#marks { max-height: 30%; overflow: auto; padding: 0 8px; }
#tree { flex: 1; overflow: auto; padding: 0 4px; }
#spacer { position: relative; margin-bottom: 24px; }
.row { position: absolute; left: 0; right: 0; height: 22px; line-height: 22px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; cursor: pointer; padding: 0 6px; border-radius: 4px; }
.row:hover { background: var(--odd); }
.row.sel { background: var(--sel); }
.tg { display: inline-block; width: 1.1em; color: var(--muted); }
.kd { color: var(--muted); font-size: 11px; margin-right: 4px; }
.dp { color: var(--muted); font-size: 10px; margin-right: 3px; }
.star { color: #c08a00; margin-left: 4px; }
.unread { color: #2f8a4a; margin-left: 2px; }
.mark { display: block; cursor: pointer; padding: 2px 4px; border-radius: 4px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.mark:hover { background: var(--odd); }
#main { overflow: auto; padding: 0 24px 48px; min-width: 0; }
header h1 { font-size: 20px; margin: 16px 0 2px; }
header p { margin: 0; color: var(--muted); }
#branch { white-space: pre-wrap; overflow-wrap: anywhere; font: 15px/1.6 Georgia, "Times New Roman", serif;
  border: 1px solid var(--line); border-radius: 6px; padding: 14px 16px; margin: 8px 0; }
.seg { cursor: pointer; border-radius: 2px; }
.seg.odd { background: var(--odd); }
.seg.cur { background: var(--cur); outline: 1px solid #d9b300; }
div.seg { display: block; margin: 6px 0; padding: 4px 8px; border-left: 3px solid var(--line); }
div.seg::before { content: attr(data-role); display: block; font: 11px system-ui, sans-serif;
  text-transform: uppercase; letter-spacing: .06em; color: var(--muted); }
div.seg[data-role="assistant"] { border-left-color: var(--accent); }
.tok { border-radius: 2px; }
#info { font-size: 13px; }
#info table { border-collapse: collapse; }
#info td { padding: 1px 10px 1px 0; vertical-align: top; }
#info td:first-child { color: var(--muted); white-space: nowrap; }
.kids { list-style: none; padding: 0; margin: 4px 0; }
.kids li { cursor: pointer; padding: 2px 6px; border-radius: 4px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.kids li:hover { background: var(--odd); }
nav button { font: inherit; margin-right: 6px; }
.legend span { display: inline-block; padding: 0 6px; margin-right: 2px; border-radius: 2px; }
.legend .p-lo { background: rgba(230, 70, 50, .6); }
.legend .p-hi { border: 1px solid var(--line); }
.note { white-space: pre-wrap; }
""".strip()

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("loom-data").textContent);
  var N = data.nodes;
  var open = new Uint8Array(N.length);
  var selected = data.cursor >= 0 ? data.cursor : (data.roots.length ? data.roots[0] : -1);
  var ROLES = { user: 1, assistant: 1, system: 1 };
  var KIND = { human: "✎", model: "◆", import: "⇲", system: "S", user: "U", assistant: "A" };

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function preview(text, size) {
    var flat = text.replace(/\r/g, "").replace(/\n/g, " ⏎ ");
    return flat.length > size ? flat.slice(0, size - 1) + "…" : flat;
  }
  function pathTo(i) {
    var out = [];
    while (i >= 0) { out.push(i); i = N[i].p; }
    return out.reverse();
  }
  function depth(i) { var d = 0; while (N[i].p >= 0) { i = N[i].p; d++; } return d; }
  function siblings(i) { return N[i].p >= 0 ? N[N[i].p].c : data.roots; }
  function label(i) {
    var n = N[i];
    if (n.b) return n.b;
    return preview(n.t, 80) || "(empty)";
  }
  function probColor(p) {
    // Unlikely tokens glow red; likely ones stay plain.
    var a = Math.max(0, Math.min(1, 1 - p)) * 0.6;
    return "rgba(230, 70, 50, " + a.toFixed(3) + ")";
  }
  function show(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function renderMarks() {
    var box = $("marks"), frag = document.createDocumentFragment(), count = 0;
    for (var i = 0; i < N.length; i++) {
      if (N[i].b === undefined) continue;
      var a = el("a", "mark", "★ " + (N[i].b || preview(N[i].t, 60) || "(empty)"));
      a.dataset.i = String(i);
      frag.appendChild(a);
      count++;
    }
    if (!count) frag.appendChild(el("div", "kd", "no bookmarks"));
    box.replaceChildren(frag);
  }

  // The tree is virtual: `rows` lists every visible node in order, but only the rows
  // in view (plus a margin) exist in the DOM, so 100k nodes scroll as fast as 100.
  var ROW = 22, MARGIN = 30, INDENT = 12, rows = [], depths = [], position = new Int32Array(N.length);

  function layout() {
    rows = [];
    depths = [];
    position.fill(-1);
    var stack = [];
    for (var r = data.roots.length - 1; r >= 0; r--) stack.push(data.roots[r], 0);
    while (stack.length) {
      var d = stack.pop(), i = stack.pop();
      position[i] = rows.length;
      rows.push(i);
      depths.push(d);
      if (open[i]) for (var c = N[i].c.length - 1; c >= 0; c--) stack.push(N[i].c[c], d + 1);
    }
    $("spacer").style.height = rows.length * ROW + "px";
  }

  function row(k) {
    var i = rows[k], d = depths[k], n = N[i];
    var line = el("div", "row" + (i === selected ? " sel" : ""));
    line.dataset.i = String(i);
    line.style.top = k * ROW + "px";
    // Indentation stops at INDENT levels (the pane is narrow); deeper rows show their depth.
    line.style.paddingLeft = (Math.min(d, INDENT) * 14 + 4) + "px";
    line.appendChild(el("span", "tg", n.c.length ? (open[i] ? "▾" : "▸") : "·"));
    if (d > INDENT) line.appendChild(el("span", "dp", String(d)));
    line.appendChild(el("span", "kd", KIND[n.k] || "?"));
    line.appendChild(el("span", "tx", preview(n.t, 120) || "(empty)"));
    if (n.b !== undefined) line.appendChild(el("span", "star", n.b ? "★ " + n.b : "★"));
    if (!n.v) line.appendChild(el("span", "unread", "•"));
    return line;
  }

  function paint() {
    var box = $("tree"), height = box.clientHeight || 800;
    var first = Math.max(0, Math.floor(box.scrollTop / ROW) - MARGIN);
    var last = Math.min(rows.length, Math.ceil((box.scrollTop + height) / ROW) + MARGIN);
    var frag = document.createDocumentFragment();
    for (var k = first; k < last; k++) frag.appendChild(row(k));
    $("rows").replaceChildren(frag);
  }

  function reveal(i) {
    var k = position[i], box = $("tree");
    if (k < 0) return;
    var y = k * ROW, height = box.clientHeight || 800;
    if (y < box.scrollTop) box.scrollTop = Math.max(0, y - ROW * 2);
    else if (y + ROW > box.scrollTop + height) box.scrollTop = y - height + ROW * 3;
  }

  var painting = false;
  $("tree").addEventListener("scroll", function () {
    if (painting) return;
    painting = true;
    requestAnimationFrame(function () { painting = false; paint(); });
  });

  function segment(i, k) {
    var n = N[i], turn = ROLES[n.k] === 1;
    var s = el(turn ? "div" : "span", "seg " + (k % 2 ? "odd" : "even") + (i === selected ? " cur" : ""));
    s.dataset.i = String(i);
    if (turn) s.dataset.role = n.k;
    if (!n.lp) { s.textContent = n.t; return s; }
    var toks = n.lp[0], lps = n.lp[1], tops = n.lp[2] || [], used = 0;
    for (var t = 0; t < toks.length; t++) {
      var p = Math.exp(lps[t]), tok = el("span", "tok", toks[t]);
      tok.style.backgroundColor = probColor(p);
      var tip = "p = " + p.toFixed(3) + " (logprob " + lps[t].toFixed(3) + ")";
      var alts = tops[t] || [];
      for (var a = 0; a < alts.length; a++) tip += "\n" + JSON.stringify(alts[a][0]) + "  p = " + Math.exp(alts[a][1]).toFixed(3);
      tok.title = tip;
      s.appendChild(tok);
      used += toks[t].length;
    }
    if (used < n.t.length) s.appendChild(document.createTextNode(n.t.slice(used)));
    return s;
  }

  function renderBranch() {
    var box = $("branch"), frag = document.createDocumentFragment();
    if (selected < 0) { box.replaceChildren(); return; }
    var path = pathTo(selected);
    for (var k = 0; k < path.length; k++) frag.appendChild(segment(path[k], k));
    box.replaceChildren(frag);
    var current = box.querySelector(".seg.cur");
    if (current) current.scrollIntoView({ block: "nearest" });
  }

  function addRow(table, key, value) {
    if (value === undefined || value === null || value === "") return;
    var tr = el("tr");
    tr.appendChild(el("td", null, key));
    tr.appendChild(el("td", null, show(value)));
    table.appendChild(tr);
  }

  function renderInfo() {
    var box = $("info"), frag = document.createDocumentFragment();
    if (selected < 0) { box.replaceChildren(); return; }
    var n = N[selected], sib = siblings(selected), at = sib.indexOf(selected);
    var nav = el("nav");
    [["↑ parent", n.p], ["← prev", at > 0 ? sib[at - 1] : -1], ["next →", at + 1 < sib.length ? sib[at + 1] : -1]]
      .forEach(function (b) {
        var btn = el("button", null, b[0]);
        btn.disabled = b[1] < 0;
        btn.dataset.i = String(b[1]);
        nav.appendChild(btn);
      });
    frag.appendChild(nav);
    var table = el("table");
    addRow(table, "node", n.i);
    addRow(table, "kind", n.k);
    addRow(table, "depth", depth(selected));
    addRow(table, "sibling", (at + 1) + " of " + sib.length);
    addRow(table, "created", n.d);
    if (n.b !== undefined) addRow(table, "bookmark", n.b || "★");
    if (n.g && n.g.length) addRow(table, "tags", n.g.map(function (x) { return "#" + x; }).join(" "));
    if (n.m) {
      var gen = n.m;
      var model = gen.model || gen.reported_model || gen.requested_model;
      addRow(table, "model", model);
      var params = gen.params || {};
      Object.keys(params).forEach(function (key) { addRow(table, key, params[key]); });
      Object.keys(gen).forEach(function (key) {
        if (key !== "params" && key !== "model" && !(key === "created" && gen[key] === n.d)) addRow(table, key, gen[key]);
      });
    }
    if (n.lp) {
      var sum = 0;
      for (var t = 0; t < n.lp[1].length; t++) sum += Math.exp(n.lp[1][t]);
      addRow(table, "tokens", n.lp[0].length + " (mean p = " + (sum / Math.max(1, n.lp[1].length)).toFixed(3) + ")");
    }
    frag.appendChild(table);
    if (n.n) { frag.appendChild(el("h2", null, "Note")); frag.appendChild(el("div", "note", n.n)); }
    frag.appendChild(el("h2", null, n.c.length ? "Continuations (" + n.c.length + ")" : "No continuations"));
    var list = el("ul", "kids");
    n.c.forEach(function (c) {
      var li = el("li", null, (N[c].b ? "★ " : "") + (preview(N[c].t, 140) || "(empty)"));
      li.dataset.i = String(c);
      list.appendChild(li);
    });
    frag.appendChild(list);
    box.replaceChildren(frag);
  }

  function select(i, expand) {
    if (i < 0 || i >= N.length) return;
    selected = i;
    var changed = false, p = N[i].p;
    while (p >= 0) { if (!open[p]) { open[p] = 1; changed = true; } p = N[p].p; }
    if (expand && N[i].c.length && !open[i]) { open[i] = 1; changed = true; }
    if (changed || position[i] < 0) layout();  // only a new expansion changes the rows
    reveal(i);
    paint();
    renderBranch();
    renderInfo();
  }

  function target(event) {
    var node = event.target;
    while (node && node !== document.body) {
      if (node.dataset && node.dataset.i !== undefined) return node;
      node = node.parentNode;
    }
    return null;
  }

  $("tree").addEventListener("click", function (event) {
    var line = target(event);
    if (!line) return;
    var i = Number(line.dataset.i);
    if (event.target.classList.contains("tg") && N[i].c.length) {
      open[i] = open[i] ? 0 : 1;
      layout();
      paint();
      return;
    }
    select(i, true);
  });
  ["marks", "branch", "info"].forEach(function (id) {
    $(id).addEventListener("click", function (event) {
      var hit = target(event);
      if (hit && !hit.disabled) select(Number(hit.dataset.i));
    });
  });
  document.addEventListener("keydown", function (event) {
    if (selected < 0 || event.altKey || event.ctrlKey || event.metaKey) return;
    var n = N[selected], sib = siblings(selected), at = sib.indexOf(selected), next = -1;
    if (event.key === "ArrowUp") next = n.p;
    else if (event.key === "ArrowDown") next = n.lc >= 0 ? n.lc : (n.c.length ? n.c[0] : -1);
    else if (event.key === "ArrowLeft") next = at > 0 ? sib[at - 1] : -1;
    else if (event.key === "ArrowRight") next = at + 1 < sib.length ? sib[at + 1] : -1;
    else return;
    event.preventDefault();
    if (next >= 0) select(next);
  });

  $("title").textContent = data.title || "Untitled loom";
  $("desc").textContent = data.description || "";
  if (data.system) { $("system").textContent = data.system; $("system-box").hidden = false; }
  $("count").textContent = N.length + " nodes";
  if (!N.length) $("branch").textContent = "(empty document)";
  for (var r = 0; r < data.roots.length; r++) open[data.roots[r]] = 1;
  renderMarks();
  layout();
  select(selected);
})();
""".strip()

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="loom">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<div id="app">
<aside id="side">
<h2>Bookmarks</h2>
<div id="marks"></div>
<h2>Tree · <span id="count"></span></h2>
<div id="tree" role="tree"><div id="spacer"><div id="rows"></div></div></div>
</aside>
<main id="main">
<header><h1 id="title"></h1><p id="desc"></p></header>
<details id="system-box" hidden><summary>System message</summary><div id="system" class="note"></div></details>
<h2>Branch <span class="legend">· token probability: <span class="p-lo">low</span><span class="p-hi">high</span></span></h2>
<div id="branch"></div>
<section id="info"></section>
</main>
</div>
<script id="loom-data" type="application/json">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def _hash(text: str) -> str:
    return (
        "'sha256-"
        + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
        + "'"
    )


def _json_for_html(payload: Any) -> str:
    """JSON that cannot end its <script> block or open a comment: <, > and & become escapes."""
    text = orjson.dumps(payload).decode("utf-8")
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _logprobs(meta: Any, text: str) -> list[Any] | None:
    """[tokens, logprobs, alternatives] when they line up with the node's text."""
    record = meta.get("logprobs") if isinstance(meta, dict) else None
    if not isinstance(record, dict):
        return None
    tokens, lps = record.get("tokens"), record.get("lp")
    if not isinstance(tokens, list) or not isinstance(lps, list) or len(tokens) != len(lps):
        return None
    if not all(isinstance(t, str) for t in tokens) or not text.startswith("".join(tokens)):
        return None
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in lps
    ):
        return None
    top = record.get("top")
    return (
        [tokens, lps, top] if isinstance(top, list) and len(top) == len(tokens) else [tokens, lps]
    )


def payload(doc: Document, node: str | None = None) -> dict[str, Any]:
    """The data the page renders: nodes by index, parents and children as indices."""
    selection = select(doc, node)
    index = {node_id: i for i, node_id in enumerate(selection.order)}
    parents = selection.parent_map()
    nodes: list[dict[str, Any]] = []
    for node_id in selection.order:
        rec = doc.nodes[node_id]
        text = str(rec.get("text", ""))
        kids = selection.children.get(node_id, [])
        entry: dict[str, Any] = {
            "i": node_id,
            "p": index.get(parents.get(node_id) or "", -1),
            "c": [index[k] for k in kids],
            "t": text,
            "k": rec.get("kind", "human"),
            "v": bool(rec.get("visited")),
            "lc": index[rec["last_child"]] if rec.get("last_child") in kids else -1,
        }
        mark = rec.get("bookmark")
        if mark is not None:
            entry["b"] = str(mark.get("title") or "") if isinstance(mark, dict) else ""
        if rec.get("tags"):
            entry["g"] = [str(t) for t in rec["tags"]]
        if rec.get("note"):
            entry["n"] = str(rec["note"])
        if rec.get("created"):
            entry["d"] = str(rec["created"])
        gen = gen_of(doc, node_id)
        if gen:
            entry["m"] = gen
        lp = _logprobs(rec.get("meta"), text)
        if lp is not None:
            entry["lp"] = lp
        nodes.append(entry)
    cursor = doc.cursor_id
    return {
        "title": doc.title,
        "description": doc.description,
        "system": doc.system or "",
        "roots": [index[r] for r in selection.roots],
        "cursor": index.get(cursor, -1) if cursor is not None else -1,
        "nodes": nodes,
    }


def export(doc: Document, node: str | None = None) -> bytes:
    """A single HTML file of the whole tree (or NODE's subtree with its ancestors)."""
    csp = (
        f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
        "img-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'"
    )
    page = _PAGE.format(
        csp=csp,
        title=html.escape(doc.title or "loom", quote=True),
        style=_STYLE,
        data=_json_for_html(payload(doc, node)),
        script=_SCRIPT,
    )
    return page.encode("utf-8")
