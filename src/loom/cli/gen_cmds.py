"""Generating: `loom gen`, `loom alts`, and managing models with `loom models`."""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from loom import config, payloads
from loom.cli.common import (
    command,
    diagnostic,
    doc_path,
    emit,
    fields,
    fields_option,
    file_option,
    json_mode,
    json_option,
    out,
    read_doc,
    state,
    stdout_is_terminal,
    style,
    write_doc,
)
from loom.cli.main import cli
from loom.errors import LoomError
from loom.generation.backends import PROVIDERS  # the registry: a light module
from loom.generation.request import CONVERSATION_METHODS, EMULATION_CHOICES

if TYPE_CHECKING:
    from loom.generation.core import Generation
    from loom.generation.request import GenerationRequest


class LiveView:
    """A compact multi-branch view on stderr: one line per branch, redrawn as text streams in.

    It is redrawn by moving the cursor up over the previous frame, so a frame
    must fit on the screen: at most rows - 1 lines, none wider than the terminal.
    It is an events sink (`loom.generation.events`): call it with each event.
    """

    def __init__(self, total: int | None = None, stream: Any = None) -> None:
        self.total = total or 0
        self.lines: dict[int, str] = {}
        self.status: dict[int, str] = {}
        self.drawn = 0
        self.last = 0.0
        self.stream = stream or sys.stderr

    def __call__(self, event: Any) -> None:
        from loom.generation import events as ev

        if isinstance(event, ev.Planned):
            self.total = len(event.models)
            self._draw(force=True)
        elif isinstance(event, ev.BranchStarted):
            self.total = max(self.total, event.index + 1)
            self.lines[event.index] = ""
            self.status[event.index] = "…"
            self._draw()
        elif isinstance(event, ev.TextDelta):
            self.lines[event.index] = self.lines.get(event.index, "") + event.text
            self._draw()
        elif isinstance(event, ev.BranchFinished):
            self.status[event.index] = (
                style("✗", fg="red") if event.error else style("✓", fg="green")
            )
            self.lines[event.index] = (
                event.text if not event.error else f"{event.text} [{event.error}]"
            )
            self._draw(force=True)
        elif isinstance(event, ev.Retrying):
            for index in event.indexes:
                self.status[index] = "↻"
            self._draw(force=True)

    def frame(self) -> list[str]:
        """The lines to draw now."""
        from loom.cli import render

        columns, rows = render.terminal_size(self.stream)
        room = max(1, columns - 1)  # a line as wide as the terminal wraps on some
        done = sum(1 for s in self.status.values() if s not in ("…", "↻"))
        lines = [style(render.clip(f"generating {done}/{self.total}", room), dim=True)]
        slots = max(0, rows - 2)  # rows - 1 lines in all, the header among them
        shown = self.total if self.total <= slots else max(0, slots - 1)
        digits = len(str(self.total))
        for i in range(shown):
            # Model text goes through render.flat: its control characters never reach the terminal.
            text = render.clip_left(render.flat(self.lines.get(i, "")), room - digits - 3)
            lines.append(f"{self.status.get(i, ' ')} {i + 1:>{digits}} {text}")
        if shown < self.total and slots:
            rest = range(shown, self.total)
            finished = sum(1 for i in rest if self.status.get(i, "…") not in ("…", "↻", " "))
            more = f"… {len(rest)} more ({finished} done)"
            lines.append(style(render.clip(more, room), dim=True))
        return lines

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.05:
            return
        self.last = now
        rows = self.frame()
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        # \x1b[J clears what an earlier, taller frame left below this one.
        self.stream.write(up + "".join(f"\x1b[2K{r}\n" for r in rows) + "\x1b[J")
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


MODULATION_OPTIONS = [
    click.option(
        "-p",
        "--preset",
        "presets",
        multiple=True,
        metavar="NAME",
        help="Apply a preset (repeatable; later wins). See `loom presets`.",
    ),
    click.option(
        "--param",
        "param_items",
        multiple=True,
        metavar="KEY=VALUE",
        help="Any sampler parameter, or family.key for one backend (repeatable).",
    ),
    click.option(
        "--sweep",
        multiple=True,
        metavar="P=LO:HI[:log]",
        help="Spread the children evenly over a range.",
    ),
    click.option(
        "--grid",
        multiple=True,
        metavar="P=A,B,...",
        help="Cartesian product of values; N is split across cells.",
    ),
    click.option(
        "--per-cell",
        type=click.IntRange(min=1),
        help="Children per grid cell (instead of splitting N).",
    ),
    click.option(
        "--jitter",
        multiple=True,
        metavar="P=X±D",
        help="Sample each child's value uniformly in X±D (seeded).",
    ),
    click.option(
        "--mix",
        multiple=True,
        metavar="K@MODEL:PRESET,...",
        help="Split children across models and/or presets.",
    ),
    click.option(
        "--schedule",
        multiple=True,
        metavar="P=A->B@DEPTH",
        help="Vary a parameter with the node's depth.",
    ),
    click.option(
        "--random-preset", is_flag=True, help="Give each child a different preset, drawn at random."
    ),
    click.option(
        "--rng-seed", type=int, help="Seed for jitter and random presets (recorded on every child)."
    ),
    click.option(
        "--strict", is_flag=True, help="Refuse to run if a parameter would be dropped or changed."
    ),
]


def modulation_options(fn: Any) -> Any:
    for option in reversed(MODULATION_OPTIONS):
        fn = option(fn)
    return fn


MODULATION_KEYS = (
    "presets",
    "param_items",
    "sweep",
    "grid",
    "per_cell",
    "jitter",
    "mix",
    "schedule",
    "random_preset",
    "rng_seed",
)


def render_generation(
    result: Generation,
    raw: bool,
    null: bool,
    command_name: str,
    extra: dict[str, Any] | None = None,
) -> None:
    if json_mode():
        # A failed or interrupted run is reported by `check` as one error object instead.
        if result.write_error is None and not result.interrupted and not result.error_summary():
            emit(command_name, **payloads.generation(result, fields(listing=True)), **(extra or {}))
    else:
        for warning in result.warnings:
            diagnostic("warning", warning)
        if null:
            sys.stdout.write("".join(f"{made.text}\0" for made in result.nodes))
            sys.stdout.flush()
        elif raw or not stdout_is_terminal():
            sys.stdout.write(
                "\n\n".join(made.text for made in result.nodes)
                if raw
                else "".join(f"{made.id}\n" for made in result.nodes)
            )
            sys.stdout.flush()
        elif result.nodes:
            _list_children(result)
    try:
        result.check()
    except LoomError as exc:
        chosen = state().fields  # the kept branches in the fields asked for (brief by default)
        if "nodes" in exc.details and chosen is not None:
            exc.details["nodes"] = [payloads.node(n, chosen) for n in result.nodes]
        raise


def _list_children(result: Generation) -> None:
    """The new children, numbered as `loom ls` numbers them (so `loom down N` works), and a hint."""
    from loom.cli import render
    from loom.document import Node

    doc = read_doc()
    ids = [made.id for made in result.nodes if made.id in doc.nodes]
    if not ids:
        return
    kids = (
        doc.live_child_ids(result.parent)
        if result.parent is not None and result.parent in doc.nodes
        else []
    )
    shorts = doc.short_ids(ids)
    for made_id in ids:
        node = Node(doc, made_id)
        values = render.modulated_values(node.record.get("meta", {}))
        out(
            render.node_line(
                node,
                shorts[made_id],
                number=kids.index(made_id) + 1 if made_id in kids else None,
                current=made_id == doc.cursor_id,
                suffix=style(values, dim=True) if values else "",
            )
        )
    numbers = [kids.index(i) + 1 for i in ids if i in kids]
    if doc.cursor_id == result.parent and numbers:
        first, last = numbers[0], numbers[-1]
        span = str(first) if first == last else f"{first}..{last}"
        hint = f"(`loom down N`, N in {span}, to continue from one; `loom tree` to see them)"
    elif doc.cursor_id in ids:
        hint = "(the cursor is on the ● one; `loom tree` to see them)"
    else:
        hint = f"(`loom goto {shorts[ids[0]]}` to continue from one; `loom tree` to see them)"
    out(style(hint, dim=True))


CURSOR = click.option(
    "--cursor",
    "cursor",
    type=click.Choice(["stay", "first", "last"]),
    default="stay",
    show_default=True,
    help="Where the cursor goes afterwards.",
)
EMULATE = click.option(
    "--emulate",
    type=click.Choice([m for m in EMULATION_CHOICES if m not in CONVERSATION_METHODS]),
    default="auto",
    show_default=True,
    help="How a chat model is made to continue text (auto: from its capabilities).",
)
TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Deadline for the whole call (default: the model's timeout option, else 120).",
)
RAW = click.option(
    "--raw", is_flag=True, help="Print only the generated texts, separated by a blank line."
)
NULL = click.option(
    "-0",
    "--null",
    is_flag=True,
    help="Print only the generated texts, each followed by a NUL byte (for scripts).",
)


def run_generation(
    request: GenerationRequest,
    raw: bool,
    null: bool,
    command_name: str,
    sync_file: str | None = None,
) -> None:
    """Make the one library call for a generation command and print what it made.

    `sync_file`: `loom sync` it first, generate from the end of its branch, sync it again.
    """
    from loom.generation.core import generate

    view = LiveView() if (sys.stderr.isatty() and not json_mode()) else None
    if sync_file is None:
        leave_ctrl_c_to_the_generation()
        result = generate(doc_path(), request, events=view)
        render_generation(result, raw, null, command_name)
        return
    from loom import sync
    from loom.cli.sync_cmds import note_synced

    synced = sync.generate(doc_path(), sync_file, request, events=view)
    _deaf_once_stopped(synced.generation)
    note_synced(synced)
    render_generation(
        synced.generation,
        raw,
        null,
        command_name,
        {"sync": payloads.synced_generation(synced)},
    )


def leave_ctrl_c_to_the_generation() -> None:
    """Call just before a generating library call: it answers Ctrl-C itself while it runs
    (the finished branches are saved); before and after it, a Ctrl-C would only cut its
    report (what was kept) short."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _deaf_once_stopped(result: Generation) -> None:
    """A generation stopped by a signal is saved: more Ctrl-C while its report is printed
    would only cut the report (what was kept) short."""
    if result.interrupted:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)


def generation_options(cursor_default: str = "stay") -> Any:
    """The options every generating command takes (gen, say, reply)."""

    def decorate(fn: Any) -> Any:
        options: list[Any] = [
            click.option(
                "-n",
                "count",
                type=click.IntRange(min=1, max=256),
                default=None,
                help="Children per model (default 4, or the document's `n`).",
            ),
            click.option(
                "-m",
                "--model",
                "models",
                multiple=True,
                help="Model name (repeatable: N children from each). See `loom models`.",
            ),
            sampler_options,
            modulation_options,
            RAW,
            NULL,
            click.option(
                "--keep-partial",
                is_flag=True,
                help="On Ctrl-C, keep unfinished branches (marked incomplete).",
            ),
            click.option(
                "--cursor",
                "cursor",
                type=click.Choice(["stay", "first", "last"]),
                default=cursor_default,
                show_default=True,
                help="Where the cursor goes afterwards.",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=None,
                help="Requests in flight per model (default: the provider's, 16 for hosted APIs).",
            ),
            TIMEOUT,
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def request_from_options(
    options: dict[str, Any], **fields: Any
) -> tuple[GenerationRequest, bool, bool]:
    """A GenerationRequest from `generation_options`' values (popped from `options`), and
    the --raw and -0 choices."""
    from loom.generation.request import GenerationRequest
    from loom.sampling.params import parse_assignments

    m = {key: options.pop(key) for key in MODULATION_KEYS}
    modulation = {
        key: m[key] for key in MODULATION_KEYS if key not in ("presets", "param_items", "rng_seed")
    }
    raw, null = options.pop("raw"), options.pop("null")
    request = GenerationRequest(
        n=options.pop("count"),
        models=options.pop("models"),
        presets=m["presets"],
        modulation=modulation,
        keep_partial=options.pop("keep_partial"),
        cursor=options.pop("cursor"),
        concurrency=options.pop("concurrency"),
        timeout=options.pop("timeout"),
        rng_seed=m["rng_seed"],
        strict=options.pop("strict"),
        **fields,
        params={**_params_from_flags(**options), **parse_assignments(m["param_items"])},
    )
    return request, raw, null


@command(cli, "gen")
@click.argument("node", required=False, metavar="[NODE]")
@generation_options()
@EMULATE
@click.option(
    "--sync",
    "sync_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Sync FILE first (`loom sync`), generate from its end, then write it the cursor's branch.",
)
def gen_cmd(node: str | None, emulate: str, sync_file: str | None, **options: Any) -> None:
    """Generate N continuations of NODE (default: the cursor), each a new child.

    With no -m, uses the default model (`loom models default NAME`), else the
    embedded local model, which needs no key and no network. Parameters come in
    layers (model < presets < document < sticky overrides on ancestors < flags;
    see `loom params --explain`), and modulators vary them across the children.
    Each child records the model, the parameters sent and where they came from,
    finish reason, usage, timing, logprobs and how a chat model was framed.
    Ctrl-C (or SIGTERM) keeps the branches that finished; if the document cannot
    be written, the texts go to a recovery file (`loom recover`).

    \b
    Examples:
      loom gen                                  # 4 children from the default model
      loom gen -n 2 --max-tokens 32 -t 0.8
      loom gen -n 5 --sweep temperature=0.6:1.4 # 0.6, 0.8, 1.0, 1.2, 1.4
      loom gen --grid temperature=0.8,1.2 min_p=0.02,0.1 --per-cell 2
      loom gen -n 4 --jitter temperature=1.0±0.2 --rng-seed 7
      loom gen --mix 2@claude:creative,3@local -p single-line
      loom gen -n 1 --raw | less
      loom gen -n 3 -0 | xargs -0 -n1 echo   # one text per NUL-terminated record
      loom gen --sync draft.md --cursor first # from the end of your file, into it
    """
    if sync_file is not None and node is not None:
        raise click.UsageError("--sync generates from the end of FILE: give no NODE")
    request, raw, null = request_from_options(options, node=node, emulate=emulate)
    run_generation(request, raw, null, "gen", sync_file)


@command(cli, "regen")
@click.argument("node", required=False, metavar="[NODE]")
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1, max=256),
    default=1,
    show_default=True,
    help="How many new siblings.",
)
@sampler_options
@click.option(
    "--param",
    "param_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recorded parameter.",
)
@click.option("-m", "--model", "model_name", help="Use another model than the recorded one.")
@RAW
@NULL
@CURSOR
@TIMEOUT
@EMULATE
def regen_cmd(
    node: str | None,
    count: int,
    param_items: tuple[str, ...],
    model_name: str | None,
    raw: bool,
    null: bool,
    cursor: str,
    timeout: float | None,
    emulate: str,
    **sampler: Any,
) -> None:
    """Re-run the generation that made NODE (default: the cursor), with its recorded
    parameters: new sibling(s).

    Overrides given as flags replace the recorded values; the rest is exactly
    what was sent before (including the emulation method, unless --emulate).

    \b
    Examples:
      loom regen
      loom regen a1b2 -n 3 --temperature 1.2
    """
    from loom.generation.request import GenerationRequest
    from loom.sampling.params import parse_assignments

    request = GenerationRequest(
        regenerate=node or "@",
        n=count,
        models=(model_name,) if model_name else (),
        params={**_params_from_flags(**sampler), **parse_assignments(param_items)},
        emulate=emulate,
        cursor=cursor,
        timeout=timeout,
    )
    run_generation(request, raw, null, "regen")


@command(cli, "params")
@click.argument("node", required=False, metavar="[NODE]")
@click.option(
    "--explain",
    is_flag=True,
    help="What a generation from NODE would use now: every value and the layer that set it.",
)
@click.option(
    "-m", "--model", "model_name", help="The model to explain for (default: the default model)."
)
@click.option(
    "-p",
    "--preset",
    "presets",
    multiple=True,
    metavar="NAME",
    help="Presets to include in the explanation.",
)
@click.option(
    "--set",
    "set_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Sticky override on NODE, inherited by its subtree.",
)
@click.option(
    "--unset",
    "unset_keys",
    multiple=True,
    metavar="KEY",
    help="Remove a sticky override from NODE.",
)
def params_cmd(
    node: str | None,
    explain: bool,
    model_name: str | None,
    presets: tuple[str, ...],
    set_items: tuple[str, ...],
    unset_keys: tuple[str, ...],
) -> None:
    """Show what made NODE, what a generation from it would use now, or set sticky parameters.

    Plain `loom params NODE` shows what made NODE: the recorded model and
    parameters of its generation (a node that was not generated has none, so
    you get the --explain table instead, with a note saying so). With --explain:
    what a generation from NODE would use now, each value with the layer that
    set it (model < presets < document < sticky overrides < flags). Parameters
    not listed are left to the model's or backend's own defaults.

    \b
    Examples:
      loom params a1b2                  # the recorded generation of a1b2
      loom params --explain -p creative # what `loom gen -p creative` would send from here
      loom params --set temperature=0.7 # sticky for the cursor's whole subtree
      loom params --unset temperature
    """
    from loom.sampling.params import (
        LayerInputs,
        clear_sticky,
        format_explain,
        parse_assignments,
        resolve,
        set_sticky,
        validate,
    )

    if set_items or unset_keys:
        from loom.journal import transaction

        with write_doc() as wdoc, transaction(wdoc, "params", "set sticky parameters"):
            target = wdoc.resolve(node)
            if set_items:
                set_sticky(wdoc, target.id, validate(parse_assignments(set_items, flag="--set")))
            if unset_keys:
                clear_sticky(wdoc, target.id, list(unset_keys))
            sticky = target.record.get("meta", {}).get("sticky_params", {})
        if json_mode():
            emit(
                "params",
                node=payloads.node(target, fields(listing=True)),
                sticky=sticky,
                cursor=wdoc.cursor_id,
            )
        else:
            out("sticky: " + (", ".join(f"{k}={v}" for k, v in sticky.items()) or "(none)"))
        return
    doc = read_doc()
    target = doc.resolve(node)
    gen = target.record.get("meta", {}).get("gen")
    if gen and not explain:
        if json_mode():
            emit(
                "params",
                node=payloads.node(target, fields(listing=True)),
                generation=gen,
                cursor=doc.cursor_id,
            )
            return
        out(f"model:    {gen.get('model')} ({gen.get('backend')} {gen.get('model_id')})")
        for key, value in gen.get("params", {}).items():
            out(f"  {key} = {value}")
        modulation = gen.get("modulation") or {}
        if modulation.get("modulators"):
            out(
                f"modulation: {', '.join(modulation['modulators'])} (child {modulation.get('index')})"
            )
        if gen.get("emulation"):
            out(
                f"emulation: {gen['emulation'].get('method')} (framing {gen['emulation'].get('framing')})"
            )
        if gen.get("dropped"):
            out(f"dropped:  {gen['dropped']}")
        return
    if not gen and not explain and not json_mode():
        short = doc.short_ids([target.id])[target.id]
        out(
            style(
                f"{short} was not generated; this is what a generation from it would use now:",
                dim=True,
            )
        )
    model = config.get_model(model_name)
    inputs = LayerInputs.from_doc(doc, target.id, presets=presets)
    resolved = resolve(inputs.layers(model))
    rows = resolved.explain()
    if json_mode():
        emit(
            "params",
            node=payloads.node(target, fields(listing=True)),
            model=model.name,
            values=resolved.values,
            explain=[r.to_dict() for r in rows],
            cursor=doc.cursor_id,
        )
    else:
        if rows:
            out(format_explain(rows))
        out(
            style(
                f"Parameters not listed are left to {model.name}'s own defaults"
                " (the model's or its backend's).",
                dim=True,
            )
        )


@command(cli, "presets")
def presets_cmd() -> None:
    """List sampler presets (built-in and your own presets.toml), with what each sets.

    Under each preset's description: the settings it changes from the preset it
    extends (most extend `neutral`, which turns every truncation and penalty
    off), or all of them; --json lists every parameter of each.

    \b
    Example:
      loom presets
      loom gen -p creative -p single-line
    """
    from loom.cli import render
    from loom.sampling.presets import list_presets, load_presets

    book = load_presets()
    infos = list_presets(book)
    if json_mode():
        emit(
            "presets",
            presets=[
                {
                    "name": i.name,
                    "description": i.description,
                    "source": i.source,
                    "params": i.params,
                }
                for i in infos
            ],
        )
        return
    name_wide = max((len(i.name) for i in infos), default=0)
    room = render.width() - 1 if stdout_is_terminal() else None
    for i in infos:
        chain = book.chain(i.name)
        base: dict[str, Any] = {}
        for preset in chain[:-1]:
            base.update(preset.params)
        # Only what this preset changes: neutral's 13 settings on every line hid the point.
        changed = {k: v for k, v in i.params.items() if k not in base or base[k] != v}
        settings = render.flat(", ".join(f"{k}={v}" for k, v in changed.items()))
        if len(chain) > 1:
            parent = chain[-2].name if chain[-2].name != i.name else f"built-in {i.name}"
            settings = f"{parent} + {settings}" if settings else f"as {parent}"
        # Two lines, each cut to the terminal: on one, long descriptions pushed the settings off.
        head = f"{i.name:<{name_wide}}  "
        description = render.flat(i.description)
        if room is not None:
            description = render.clip(description, room - len(head) - 9)
            settings = render.clip(settings, room - len(head) - 9)
        out(f"{head}{style(f'{i.source:<7}', dim=True)}  {description}")
        if settings:
            out(" " * (len(head) + 9) + style(settings, dim=True))


@command(cli, "alts", context_settings={"ignore_unknown_options": True})
@click.argument("node", metavar="NODE")
@click.argument("offset", type=int, required=False)
@click.option(
    "--pick",
    "pick",
    type=click.IntRange(min=1),
    help="Branch from alternative K (1-based): a new sibling.",
)
def alts_cmd(node: str, offset: int | None, pick: int | None) -> None:
    """The alternatives recorded at the token covering character OFFSET of NODE's text.

    Without OFFSET: every token of NODE with its character offset and probability,
    so you can see which offset to ask about. A negative OFFSET counts from the end
    of the text (-1 is the last character). With --pick K, adds a sibling of NODE
    whose text is NODE's text up to that token followed by alternative K, and moves
    there.

    \b
    Examples:
      loom alts a1b2             # the token table
      loom alts a1b2 12
      loom alts a1b2 -1          # the last token
      loom alts a1b2 12 --pick 2 && loom gen
    """
    from loom import logprobs

    if offset is None:
        if pick is not None:
            raise click.UsageError("--pick needs an OFFSET: the token to branch at")
        _token_table(node)
        return
    if pick is not None:
        with write_doc() as wdoc:
            target_id = wdoc.resolve(node).id
            at = logprobs.absolute_offset(wdoc, target_id, offset)
            made = logprobs.branch_from_alternative(wdoc, target_id, at, pick - 1)
        if json_mode():
            emit(
                "alts",
                node=payloads.node(made, fields()),
                parent=made.parent_id,
                cursor=wdoc.cursor_id,
            )
        else:
            out(made.id)
        return
    doc = read_doc()
    target = doc.resolve(node)
    choice = logprobs.alternatives_at(
        doc, target.id, logprobs.absolute_offset(doc, target.id, offset)
    )
    rows = [
        {"token": t, "logprob": lp, "prob": math.exp(lp), "chosen": t == choice.token}
        for t, lp in choice.alternatives
    ]
    if json_mode():
        emit(
            "alts",
            node=payloads.node(target, fields(listing=True)),
            offset=choice.start,
            token_index=choice.token_index,
            token=choice.token,
            alternatives=rows,
            cursor=doc.cursor_id,
        )
        return
    p = "?" if choice.logprob is None else f"{math.exp(choice.logprob):.3f}"
    out(f"token {choice.token_index} at {choice.start}: {choice.token!r} (p={p})")
    for k, row in enumerate(rows, 1):
        mark = "●" if row["chosen"] else " "
        out(f"{mark} {k:>2}. {row['token']!r:<20} p={row['prob']:.3f}")


def _token_table(node: str) -> None:
    from loom import logprobs

    doc = read_doc()
    target = doc.resolve(node)
    tokens = logprobs.token_table(doc, target.id)
    if json_mode():
        emit(
            "alts",
            node=payloads.node(target, fields(listing=True)),
            tokens=tokens,
            cursor=doc.cursor_id,
        )
        return
    width = len(str(tokens[-1]["offset"])) if tokens else 1
    for row in tokens:
        p = "   ?" if row["prob"] is None else f"{row['prob']:.2f}"
        alts = f"  +{row['alternatives']} alt" if row["alternatives"] else ""
        out(f"{row['offset']:>{width}}  {p}  {row['token']!r}{alts}")


@command(cli, "probe")
@click.argument("model")
@click.option("--max-tokens", type=click.IntRange(min=4), default=24, show_default=True)
@click.option("--dry-run", is_flag=True, help="Score the methods without recording the winner.")
def probe_cmd(model: str, max_tokens: int, dry_run: bool) -> None:
    """Find how MODEL best continues raw text: try each emulation method, record the ranking.

    Every method the model's server can run is tried, including ones loom does not yet
    know it supports; a model on an OpenAI-compatible server that does not say which
    (llama.cpp, vLLM, LM Studio…) is recognised first. Each method continues three
    short prompts (prose, a list, dialogue); cleanup judges the outputs. The ranking
    goes into capabilities.toml in the loom config dir (and a recognised server into
    models.toml), which later generations read.

    \b
    Examples:
      loom probe claude
      loom probe local-llama --dry-run --json
    """
    from loom.emulation.probe import probe

    result = probe(config.get_model(model), max_tokens=max_tokens, record=not dry_run)
    scores = result.scores
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
    winner = result.winner
    if all(s.errors and len(s.errors) == s.total for s in scores):
        from loom.errors import BackendError

        reasons = list(dict.fromkeys(e for s in scores for e in s.errors))
        raise BackendError(
            f"every probe request to {model} failed: {'; '.join(reasons[:3])}",
            methods=rows,
        )
    if json_mode():
        emit(
            "probe",
            model=model,
            server=result.server,
            winner=winner,
            methods=rows,
            recorded=result.recorded,
        )
        return
    if result.server:
        from loom.emulation.servers import SERVERS

        out(f"server: {SERVERS[result.server].label}")
    for r in rows:
        out(f"{r['method']:<11} {r['ok']}/{r['total']} clean  {' '.join(r['verdicts'])}")
    out(
        f"best: {winner}" + (" (recorded)" if result.recorded else "")
        if winner
        else "no method produced a clean continuation"
    )


@command(cli, "recover")
@click.argument("files", nargs=-1, metavar="[RECOVERY_FILE]...")
@click.option("--list", "list_", is_flag=True, help="List what is waiting; add nothing.")
@click.option("--all", "every", is_flag=True, help="With --list: recovery files of every document.")
def recover_cmd(files: tuple[str, ...], list_: bool, every: bool) -> None:
    """Add generated texts that could not be saved, as the children they were meant to be.

    When a generation's final write fails (a full disk, a read-only file system, a
    lock held by another process), its texts are kept in a recovery file in loom's
    data folder and the error names it. `loom recover` adds every recovery file of
    the selected document (or the RECOVERY_FILEs given) in one undoable step, then
    deletes them. Children whose parent was deleted or changed become roots holding
    the whole text they continue.

    \b
    Examples:
      loom recover --list
      loom recover
      loom recover ~/.local/share/loom/recovery/20261201T120000-ab12.json
    """
    from loom import store
    from loom.generation import recovery

    if list_:
        if files:
            raise click.UsageError("--list takes no RECOVERY_FILE")
        if every:
            waiting = recovery.pending()
        else:
            path = doc_path()
            waiting = recovery.pending(store.real(path), _document_id())
        rows = [payloads.recovery(r) for r in waiting]
        if json_mode():
            emit("recover", pending=rows)
        elif not rows:
            out("nothing to recover")
        else:
            for r in rows:
                out(f"{r['file']}  {r['node_count']} text(s), {r['chars']} chars, {r['created']}")
        return
    if every:
        raise click.UsageError("--all goes with --list (recovery adds to the selected document)")
    from loom import workspace

    made, chosen = recovery.recover(doc_path(), files)
    workspace.remember(doc_path())
    if json_mode():
        emit(
            "recover",
            nodes=[payloads.node(n, fields(listing=True)) for n in made],
            files=[str(r.path) for r in chosen],
            cursor=made[0].doc.cursor_id if made else read_doc().cursor_id,
        )
    elif not chosen:
        out("nothing to recover")
    else:
        for node in made:
            out(node.id)


def _document_id() -> str | None:
    try:
        return read_doc().id
    except LoomError:  # a damaged or missing document still has recovery files by path
        return None


# ---- models ----------------------------------------------------------------------------------


@cli.group("models", invoke_without_command=True)
@json_option
@fields_option
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
        rows.append(payloads.model(model, default))
    if json_mode():
        emit("models", default=default, models=rows)
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
    type=click.Choice(list(PROVIDERS)),
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
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Deadline for a whole generation with this model (default 120).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Requests in flight at once (default: the provider's; 16 for hosted APIs).",
)
@click.option(
    "--param",
    "param",
    multiple=True,
    metavar="KEY=VALUE",
    help="A default sampler parameter (repeatable).",
)
@click.option(
    "--server",
    default="auto",
    show_default=True,
    metavar="NAME",
    help="The local server behind --base-url: llamacpp, vllm, sglang, lmstudio, ollama; "
    "auto: ask its /models; none: do not ask.",
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
    timeout: float | None,
    concurrency: int | None,
    param: tuple[str, ...],
    server: str,
    replace: bool,
) -> None:
    """Register a model under NAME (written to models.toml in the loom config dir).

    For an OpenAI-compatible server at --base-url (llama.cpp, vLLM, SGLang, LM Studio,
    Ollama), loom asks its /models which server it is, so base-model emulation can use
    what the server offers: a raw completion endpoint, then an open assistant turn.

    \b
    Examples:
      loom models add local --provider openai-chat --base-url http://127.0.0.1:8080/v1 --model qwen
      loom models add base --provider openai --base-url http://127.0.0.1:8000/v1 --model llama --kind base --server vllm
      loom models add claude --provider anthropic --model claude-sonnet-4-5 --param temperature=1
    """
    from loom.emulation import servers

    if server not in (*servers.SERVER_NAMES, "auto", "none"):
        known = ", ".join((*servers.SERVER_NAMES, "auto", "none"))
        raise click.BadParameter(f"{server!r} is not one of {known}", param_hint="--server")
    params: dict[str, Any] = {}
    for item in param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        params[key] = _parse_scalar(value)
    options: dict[str, Any] = {
        k: v for k, v in {"timeout": timeout, "concurrency": concurrency}.items() if v
    }
    table = {
        "provider": provider,
        "model": model_id,
        "base_url": base_url,
        "key_env": key_env,
        "kind": kind,
        "context": context,
        "params": params,
        "options": options,
    }
    model = config.parse_model(name, table)  # validated before the server is asked
    detected = asked = False
    if server == "auto":
        server = "none"
        if base_url and provider in servers.OPENAI_PROVIDERS and not servers.hosted(base_url):
            asked = True
            found = servers.detect(model.base_url, model.api_key())
            server, detected = (found, True) if found else ("none", False)
    elif server != "none" and provider not in servers.OPENAI_PROVIDERS:
        raise click.BadParameter(
            f"only for an OpenAI-compatible provider ({', '.join(servers.OPENAI_PROVIDERS)})",
            param_hint="--server",
        )
    if server != "none":
        options.update(servers.server_options(server, provider))
    model = config.add_model(name, table, replace=replace)
    methods = servers.auto_methods(model)
    if json_mode():
        emit(
            "models add",
            model=model.public(),
            server=None if server == "none" else server,
            detected=detected,
            emulation=methods,
            file=str(config.models_file()),
        )
        return
    out(f"added {name} ({provider}: {model_id})")
    if server != "none":
        how = "detected" if detected else "as told"
        out(
            f"server: {servers.SERVERS[server].label} ({how}); emulation tries {', '.join(methods)}"
        )
    elif asked:
        out(
            f"server: not recognised at {model.base_url} (name it with --server if it is "
            f"{', '.join(servers.SERVER_NAMES)})"
        )


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
        emit("models default", model=model.public())
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
        emit("models rm", name=name)
    else:
        out(f"removed {name}")
