"""Generating: `loom gen`, `loom alts`, and managing models with `loom models`."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from loom import config
from loom.cli.common import (
    command,
    doc_path,
    emit,
    file_option,
    json_mode,
    json_option,
    out,
    read_doc,
    stdout_is_terminal,
    style,
    write_doc,
)
from loom.cli.main import cli

if TYPE_CHECKING:
    from loom.generate.engine import Outcome


class LiveView:
    """A compact multi-branch view on stderr: one line per branch, redrawn as text streams in."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.lines: dict[int, str] = {}
        self.status: dict[int, str] = {}
        self.drawn = 0
        self.last = 0.0
        self.stream = sys.stderr

    def started(self, outcome: Outcome) -> None:
        self.lines[outcome.index] = ""
        self.status[outcome.index] = "…"
        self._draw()

    def text(self, outcome: Outcome, delta: str) -> None:
        self.lines[outcome.index] = outcome.text
        self._draw()

    def finished(self, outcome: Outcome) -> None:
        if outcome.error:
            self.status[outcome.index] = style("✗", fg="red")
        else:
            self.status[outcome.index] = style("✓", fg="green")
        self.lines[outcome.index] = (
            outcome.text if not outcome.error else f"{outcome.text} [{outcome.error}]"
        )
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.05:
            return
        self.last = now
        import shutil

        width = shutil.get_terminal_size((100, 24)).columns
        rows = []
        done = sum(1 for s in self.status.values() if s != "…")
        rows.append(style(f"generating {done}/{self.total}", dim=True))
        for i in range(self.total):
            text = self.lines.get(i, "").replace("\n", "⏎")
            room = width - 8
            shown = text if len(text) <= room else "…" + text[-(room - 1) :]
            rows.append(f"{self.status.get(i, ' ')} {i + 1:>2} {shown}")
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{r}\n" for r in rows))
        self.stream.flush()
        self.drawn = len(rows)


def _params_from_flags(**flags: Any) -> dict[str, Any]:
    params = {k: v for k, v in flags.items() if v not in (None, ())}
    if "stop" in params:
        params["stop"] = list(params["stop"])
    return params


SAMPLER_OPTIONS = [
    click.option(
        "--max-tokens", type=click.IntRange(min=1), help="Length limit per branch, in tokens."
    ),
    click.option("-t", "--temperature", type=click.FloatRange(min=0), help="Sampling temperature."),
    click.option("--top-p", type=click.FloatRange(0, 1), help="Nucleus sampling mass."),
    click.option("--top-k", type=click.IntRange(min=0), help="Keep only the K likeliest tokens."),
    click.option(
        "--min-p",
        type=click.FloatRange(0, 1),
        help="Drop tokens below this share of the top probability.",
    ),
    click.option("--stop", multiple=True, help="Stop sequence (repeatable)."),
    click.option("--seed", type=int, help="Sampling seed, where the backend honours one."),
    click.option(
        "--logprobs", type=click.IntRange(min=0, max=20), help="Alternatives to record per token."
    ),
]


def sampler_options(fn: Any) -> Any:
    for option in reversed(SAMPLER_OPTIONS):
        fn = option(fn)
    return fn


@command(cli, "gen")
@click.argument("node", required=False, metavar="[NODE]")
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1, max=256),
    default=None,
    help="Branches per model (default 4, or the document's).",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="Model name (repeatable: N branches from each). See `loom models`.",
)
@sampler_options
@click.option(
    "--raw", is_flag=True, help="Print only the generated texts, separated by a blank line."
)
@click.option(
    "--keep-partial", is_flag=True, help="On Ctrl-C, keep unfinished branches (marked incomplete)."
)
@click.option(
    "--cursor",
    "cursor",
    type=click.Choice(["stay", "first", "last"]),
    default="stay",
    show_default=True,
    help="Where the cursor goes afterwards.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--emulate",
    type=click.Choice(["auto", "completion", "template", "prefill", "system", "fewshot", "off"]),
    default="auto",
    show_default=True,
    help="How a chat model is made to continue text (auto: from its capabilities).",
)
def gen_cmd(
    node: str | None,
    count: int | None,
    models: tuple[str, ...],
    raw: bool,
    keep_partial: bool,
    cursor: str,
    concurrency: int,
    emulate: str,
    **sampler: Any,
) -> None:
    """Generate N continuations of NODE (default: the cursor), each a new child.

    With no -m, uses the default model (`loom models default NAME`), else the
    embedded local model, which needs no key and no network. Each child records
    the model, the parameters sent, finish reason, usage, timing and logprobs.

    \b
    Examples:
      loom gen                        # 4 branches from the default model
      loom gen -n 2 -m embedded --max-tokens 32 --temperature 0.8
      loom gen -m gpt -m claude -n 3  # 3 from each
      loom gen -n 1 --raw | less
    """
    from loom.generate.weave import check, generate

    params = _params_from_flags(**sampler)
    doc = read_doc()
    n = count or int(doc.defaults.get("n", 4))
    total = n * max(1, len(models))
    view = LiveView(total) if (sys.stderr.isatty() and not json_mode()) else None
    result = generate(
        doc_path(),
        node,
        n=n,
        models=list(models) or None,
        params=params,
        events=view,  # type: ignore[arg-type]
        keep_partial=keep_partial,
        concurrency=concurrency,
        cursor=cursor,
        emulate=emulate,
    )
    if json_mode():
        if not result.error_summary():
            emit(
                {
                    "command": "gen",
                    "parent": result.parent,
                    "nodes": [n.to_dict() for n in result.nodes],
                    "interrupted": result.interrupted,
                }
            )
    elif raw or not stdout_is_terminal():
        sys.stdout.write(
            "\n\n".join(n.text for n in result.nodes)
            if raw
            else "".join(f"{n.id}\n" for n in result.nodes)
        )
        sys.stdout.flush()
    else:
        from loom.cli import render

        shorts = read_doc().short_ids([made.id for made in result.nodes])
        for i, made in enumerate(result.nodes, 1):
            out(render.node_line(made, shorts[made.id], number=i))
    if result.interrupted:
        raise click.exceptions.Exit(130)
    check(result)


def _probability_colour(logprob: float) -> str:
    p = math.exp(logprob)
    if p >= 0.8:
        return "green"
    if p >= 0.5:
        return "bright_green"
    if p >= 0.2:
        return "yellow"
    if p >= 0.05:
        return "bright_red"
    return "red"


def render_probs(doc: Any, node_id: str) -> str:
    """The branch text with every token of known probability coloured by it."""
    pieces: list[str] = []
    for pid in doc.path_ids(node_id):
        rec = doc.nodes[pid]
        text = rec.get("text", "")
        probs = rec.get("meta", {}).get("logprobs")
        if not probs or "".join(probs.get("tokens", [])) != text:
            pieces.append(text)
            continue
        for tok, lp in zip(probs["tokens"], probs["lp"], strict=False):
            pieces.append(style(tok, fg=_probability_colour(lp)))
    return "".join(pieces)


@command(cli, "alts")
@click.argument("node", metavar="NODE")
@click.argument("offset", type=int)
@click.option(
    "--pick",
    "pick",
    type=click.IntRange(min=1),
    help="Branch from alternative K (1-based): a new sibling.",
)
def alts_cmd(node: str, offset: int, pick: int | None) -> None:
    """List the alternatives recorded at the token covering character OFFSET of NODE's text.

    With --pick K, adds a sibling of NODE whose text is NODE's text up to that
    token followed by alternative K, and moves there.

    \b
    Examples:
      loom alts a1b2 12
      loom alts a1b2 12 --pick 2 && loom gen
    """
    from loom.ops import add_sibling, goto

    doc = read_doc()
    target = doc.resolve(node)
    probs = target.record.get("meta", {}).get("logprobs")
    if not probs or not probs.get("tokens"):
        raise click.UsageError(f"node {target.id[:8]} has no token probabilities recorded")
    starts, pos = [], 0
    for tok in probs["tokens"]:
        starts.append(pos)
        pos += len(tok)
    if not 0 <= offset < pos:
        raise click.BadParameter(
            f"offset must be within the node's text (0..{pos - 1})", param_hint="OFFSET"
        )
    index = max(i for i, s in enumerate(starts) if s <= offset)
    chosen = probs["tokens"][index]
    alternatives = [(t, lp) for t, lp in (probs.get("top") or [[]] * len(starts))[index]]
    rows = [
        {"token": t, "logprob": lp, "prob": math.exp(lp), "chosen": t == chosen}
        for t, lp in alternatives
    ]
    if pick is not None:
        if pick > len(alternatives):
            raise click.BadParameter(
                f"there are {len(alternatives)} alternatives", param_hint="--pick"
            )
        text = target.text[: starts[index]] + alternatives[pick - 1][0]
        with write_doc() as wdoc:
            meta = {
                "alt_of": target.id,
                "alt": {"offset": starts[index], "token": alternatives[pick - 1][0]},
            }
            made = add_sibling(wdoc, target.id, text, kind=target.kind, meta=meta)
            goto(wdoc, made.id)
        if json_mode():
            emit({"command": "alts", "node": made.to_dict()})
        else:
            out(made.id)
        return
    if json_mode():
        emit(
            {
                "command": "alts",
                "node": target.id,
                "offset": starts[index],
                "token": chosen,
                "alternatives": rows,
            }
        )
        return
    out(f"token {index} at {starts[index]}: {chosen!r} (p={math.exp(probs['lp'][index]):.3f})")
    for k, row in enumerate(rows, 1):
        mark = "●" if row["chosen"] else " "
        out(f"{mark} {k:>2}. {row['token']!r:<20} p={row['prob']:.3f}")


@command(cli, "probe")
@click.argument("model")
@click.option("--max-tokens", type=click.IntRange(min=4), default=24, show_default=True)
@click.option("--dry-run", is_flag=True, help="Score the methods without recording the winner.")
def probe_cmd(model: str, max_tokens: int, dry_run: bool) -> None:
    """Find how MODEL best continues raw text: try each emulation method, record the ranking.

    Each method continues three short prompts (prose, a list, dialogue); cleanup
    judges the outputs. The ranking goes into capabilities.toml in the loom config
    dir, which later generations read.

    \b
    Examples:
      loom probe claude
      loom probe local-llama --dry-run --json
    """
    from loom.generate.probe import probe

    scores = probe(config.get_model(model), max_tokens=max_tokens, record=not dry_run)
    rows: list[dict[str, Any]] = [
        {
            "method": s.method,
            "ok": s.ok,
            "total": s.total,
            "verdicts": s.verdicts,
            "cut_chars": s.cut_chars,
            "errors": s.errors[:3],
        }
        for s in scores
    ]
    winner = next((s.method for s in scores if s.ok), None)
    if json_mode():
        emit(
            {
                "command": "probe",
                "model": model,
                "winner": winner,
                "methods": rows,
                "recorded": not dry_run and winner is not None,
            }
        )
        return
    for r in rows:
        out(f"{r['method']:<11} {r['ok']}/{r['total']} clean  {' '.join(r['verdicts'])}")
    out(
        f"best: {winner}" + ("" if dry_run or winner is None else " (recorded)")
        if winner
        else "no method produced a clean continuation"
    )


# ---- models ----------------------------------------------------------------------------------


@cli.group("models", invoke_without_command=True)
@json_option
@file_option
@click.pass_context
def models_group(ctx: click.Context) -> None:
    """List the models loom knows and which can be used now; add, remove or set the default.

    \b
    Examples:
      loom models
      loom models add claude --provider anthropic --model claude-sonnet-4-5
      loom models default claude
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@command(models_group, "list")
def models_list() -> None:
    """List models: name, provider, model id, kind, and whether it is usable now.

    \b
    Example:
      loom models list --json
    """
    default = config.default_model_name()
    rows = []
    for model in config.all_models().values():
        usable, why = model.usable()
        rows.append(
            {**model.public(), "default": model.name == default, "usable": usable, "status": why}
        )
    if json_mode():
        emit({"command": "models", "default": default, "models": rows})
        return
    for r in rows:
        flag = style("✓", fg="green") if r["usable"] else style("✗", fg="red")
        star = "*" if r["default"] else " "
        out(
            f"{flag}{star} {r['name']:<16} {r['provider']:<12} {r['model']:<28} {r['kind']:<5} {style(r['status'], dim=True)}"
        )


@command(models_group, "add")
@click.argument("name")
@click.option(
    "--provider",
    type=click.Choice(["openai", "openai-chat", "anthropic", "embedded"]),
    required=True,
)
@click.option("--model", "model_id", required=True, help="The provider's model id.")
@click.option(
    "--base-url", help="Endpoint, e.g. http://127.0.0.1:8080/v1 (default: the provider's)."
)
@click.option("--key-env", help="Environment variable holding the key (default: the provider's).")
@click.option(
    "--kind",
    type=click.Choice(["base", "chat"]),
    help="base: raw continuation; chat: instruct model.",
)
@click.option("--context", type=click.IntRange(min=1), help="Context length in tokens.")
@click.option(
    "--param",
    "param",
    multiple=True,
    metavar="KEY=VALUE",
    help="A default sampler parameter (repeatable).",
)
@click.option("--replace", is_flag=True, help="Overwrite a model of the same name.")
def models_add(
    name: str,
    provider: str,
    model_id: str,
    base_url: str | None,
    key_env: str | None,
    kind: str | None,
    context: int | None,
    param: tuple[str, ...],
    replace: bool,
) -> None:
    """Register a model under NAME (written to models.toml in the loom config dir).

    \b
    Examples:
      loom models add local --provider openai --base-url http://127.0.0.1:8080/v1 --model llama --kind base
      loom models add claude --provider anthropic --model claude-sonnet-4-5 --param temperature=1
    """
    params: dict[str, Any] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        params[key] = _parse_scalar(value)
    table = {
        "provider": provider,
        "model": model_id,
        "base_url": base_url,
        "key_env": key_env,
        "kind": kind,
        "context": context,
        "params": params,
    }
    model = config.add_model(name, table, replace=replace)
    if json_mode():
        emit({"command": "models add", "model": model.public(), "file": str(config.models_file())})
    else:
        out(f"added {name} ({provider}: {model_id})")


def _parse_scalar(value: str) -> Any:
    import tomllib

    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


@command(models_group, "default")
@click.argument("name")
def models_default(name: str) -> None:
    """Make NAME the model `loom gen` uses when no -m is given.

    \b
    Example:
      loom models default claude
    """
    model = config.set_default(name)
    if json_mode():
        emit({"command": "models default", "model": model.public()})
    else:
        out(f"default model: {name}")


@command(models_group, "rm")
@click.argument("name")
def models_rm(name: str) -> None:
    """Remove a configured model.

    \b
    Example:
      loom models rm old-model
    """
    config.remove_model(name)
    if json_mode():
        emit({"command": "models rm", "name": name})
    else:
        out(f"removed {name}")
