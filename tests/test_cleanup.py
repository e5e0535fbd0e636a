"""Base-model emulation: cleaning chat output, framing requests, the capability table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.emulation import capabilities as capmod
from loom.emulation import cleanup
from loom.emulation import framing as emulate
from loom.emulation.capabilities import ModelCaps, apply_limits, load_table, lookup
from loom.emulation.cleanup import (
    CleanOptions,
    Draft,
    Prepared,
    Seam,
    clean,
    in_dialogue,
    overlap,
    prepare_prompt,
    quote_open,
)
from loom.emulation.framing import (
    FRAMING_VERSION,
    METHODS,
    build_request,
    choose_method,
    seed_phrase,
)
from loom.errors import ConfigError
from loom.generation.backends.base import Capabilities

CORPUS = json.loads((Path(__file__).parent / "data" / "cleanup_corpus.json").read_text("utf-8"))
CASES = CORPUS["cases"]


def case_frame(case: dict[str, Any]) -> tuple[str, ...]:
    """What was sent besides the document: given, or what a framing version sends."""
    if "frame" in case:
        return tuple(case["frame"])
    if "framing" in case:
        _, framing = build_request(
            case["method"], case["prompt"], "m", framing_version=case["framing"]
        )
        return framing.frame
    return ()


def run_case(case: dict[str, Any]) -> cleanup.Cleaned:
    prepared = prepare_prompt(case["prompt"], rewind=case.get("rewind", False))
    options = CleanOptions(**case.get("options", {}))
    return clean(
        case["prompt"],
        case["raw"],
        case["method"],
        case.get("finish_reason"),
        options,
        prepared=prepared,
        frame=case_frame(case),
    )


# ---------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus(case: dict[str, Any]) -> None:
    """Each realistic reply cleans to the expected text with the expected verdict."""
    got = run_case(case)
    assert (got.text, got.verdict) == (case["expected"], case["verdict"]), case["note"]
    assert got.raw == case["raw"]


def test_corpus_is_broad() -> None:
    """The corpus covers every method and verdict, with many tricky no-change cases."""
    assert len(CASES) >= 40
    assert len({c["id"] for c in CASES}) == len(CASES)
    assert {c["verdict"] for c in CASES} == set(get_args(cleanup.Verdict))
    assert {c["method"] for c in CASES} >= {"system", "fewshot", "completion", "prefill", "off"}
    assert sum(c["id"].startswith("tricky_") for c in CASES) >= 10


# ---------------------------------------------------------------------------
# Before the request
# ---------------------------------------------------------------------------


def test_prepare_strips_and_remembers_trailing_whitespace() -> None:
    assert prepare_prompt("Hello world \n\n") == Prepared("Hello world", " \n\n")
    assert prepare_prompt("") == Prepared("", "")


def test_prepare_rewinds_only_a_last_word_cut_mid_way() -> None:
    assert prepare_prompt("reconvene on Thurs", rewind=True) == Prepared(
        "reconvene on", "", " Thurs"
    )
    # After whitespace the word is complete; a single word is the whole prompt.
    assert prepare_prompt("on Thurs ", rewind=True).rewound == ""
    assert prepare_prompt("Thurs", rewind=True).rewound == ""
    # Scripts without spaces have no word boundary to rewind to.
    assert prepare_prompt("他走进房间", rewind=True).rewound == ""
    assert prepare_prompt("He said.", rewind=True).rewound == ""


def test_dialogue_detection() -> None:
    assert quote_open('"Are you coming?" she asked. "')
    assert quote_open("He said, \u201cwait")
    assert not quote_open('"Done," she said.')
    assert in_dialogue("User: hi\nAssistant:")
    assert in_dialogue("DR. REYES:")
    assert not in_dialogue("The recipe calls for the following:")
    assert not in_dialogue("The night was dark.")


# ---------------------------------------------------------------------------
# Steps, one by one
# ---------------------------------------------------------------------------


def seam(prompt: str, method: str = "system", **kw: Any) -> Seam:
    prepared = kw.pop("prepared", None) or prepare_prompt(prompt)
    return Seam(prompt, prepared, method, dialogue=in_dialogue(prompt), **kw)


def step(name: str, prompt: str, text: str, **kw: Any) -> Draft:
    return cleanup.STEPS[name](seam(prompt, **kw), Draft(text))


@pytest.mark.parametrize(
    "raw",
    [
        "Sure, here's the continuation:\n\nBody",
        "Certainly! Here is a natural continuation of the passage:\nBody",
        "Of course! I'd be happy to continue the story!\n\nBody",
        "**Continuation:**\nBody",
        "Continuation of the story: Body",
        "(continued)\nBody",
        "Here you go:\n\nBody",
        "Absolutely!\n\nBody",
        "What a great opening! Here's the next part:\n\nBody",
    ],
)
def test_strip_preamble(raw: str) -> None:
    out = step("strip_preamble", "The night was dark.", raw)
    assert out.text == "Body"
    assert out.ops[0]["op"] == "strip_preamble"
    assert str(out.ops[0]["removed"]) + out.text == raw


@pytest.mark.parametrize(
    "raw",
    [
        "Sure, I'll be there.",
        "Sure enough, the door was locked.",
        "Here is what I know: nothing.",
        "Certainly not before noon.",
        "Okay was all she said.",
        "Continuing down the road, they found a well.",
    ],
)
def test_strip_preamble_leaves_prose_alone(raw: str) -> None:
    assert step("strip_preamble", "The night was dark.", raw).text == raw


def test_strip_preamble_in_dialogue_only_strips_explicit_labels() -> None:
    prompt = '"Ready?" she asked. "'
    assert step("strip_preamble", prompt, "Absolutely!\nLet's go.\"").ops == ()
    assert step("strip_preamble", prompt, "Here's the continuation:\nYes.\"").text == 'Yes."'


def test_strip_tags_ignores_documents_with_markup() -> None:
    assert step("strip_tags", "Text", "<continuation>more</continuation>").text == "more"
    assert step("strip_tags", "Text", "more</continuation>").text == "more"
    html = "<ul>\n  <li>One</li>\n  "
    assert step("strip_tags", html, "<text>Two</text>").ops == ()


def test_strip_fences_rules() -> None:
    fenced = "```js\nlet x = 1;\n```"
    assert step("strip_fences", "Prose and", fenced).text == "let x = 1;"
    assert step("strip_fences", "Prose and", fenced).ops[0]["lang"] == "js"
    # An unclosed fence (cut by the token limit) is still a wrapper.
    assert step("strip_fences", "Prose and", "```\nlet x").text == "let x"
    done = "Text:\n```\na\n```\n"
    assert step("strip_fences", done, fenced).ops == ()


def test_strip_quotes_needs_length_or_a_preamble() -> None:
    long = '"' + "word " * 10 + 'end."'
    assert step("strip_quotes", "And then", long).text == long[1:-1]
    assert step("strip_quotes", "And then", '"Short."').ops == ()
    assert step("strip_quotes", "She said,", long).ops == ()
    assert step("strip_quotes", "And then", '"One" and "two" and more words here.').ops == ()


def test_strip_closing_needs_its_own_paragraph_and_something_left() -> None:
    assert step("strip_closing", "x", "Body.\nHope this helps!").text == "Body."
    assert step("strip_closing", "x", "Body. Hope this helps!").ops == ()
    assert step("strip_closing", "x", "\nLet me know if you'd like more.").ops == ()
    quoted = 'Body.\n"Let me know if you need anything," she said.'
    assert step("strip_closing", "x", quoted).ops == ()


def test_overlap_thresholds_and_anchoring() -> None:
    assert overlap("He looked at the", "the door") == 0  # one short word is a coincidence
    assert overlap("went to the old mill", "the old mill, then home") == len("the old mill")
    assert overlap("ran extraordinary distances", "ordinary distances") == 0  # mid-word start
    assert overlap("a b c d", "x a b c d") == 0  # never mid-reply
    assert overlap("Tail of it all", "  Tail of it all and more") == len("  Tail of it all")
    custom = CleanOptions(min_overlap_chars=100, min_overlap_words=100, sentence_overlap_words=100)
    assert overlap("went to the old mill", "the old mill, then", custom) == 0


def test_drop_rewound() -> None:
    prepared = prepare_prompt("on Thurs", rewind=True)
    out = step("drop_rewound", "on Thurs", "thursday.", prepared=prepared)
    assert out.text == "day." and out.ops[0]["removed"] == "thurs"
    miss = step("drop_rewound", "on Thurs", "Friday.", prepared=prepared)
    assert miss.text == "Friday." and miss.ops[0]["op"] == "rewind_mismatch"


@pytest.mark.parametrize(
    ("prompt", "method", "raw", "expected"),
    [
        ("Hi ", "completion", " there", "there"),
        ("Hi\n", "completion", "\n\nthere", "\nthere"),
        ("Hi\n\n", "completion", "\nthere", "there"),
        ("Hi ", "completion", "\n\nthere", "\n\nthere"),
        ("Hi\n", "system", "    indented", "    indented"),
        ("Hi\n", "completion", "    indented", "indented"),
        ("Hi", "completion", " there", " there"),
    ],
)
def test_restore_trailing(prompt: str, method: str, raw: str, expected: str) -> None:
    assert step("restore_trailing", prompt, raw, method=method).text == expected


@pytest.mark.parametrize(
    ("prompt", "raw", "expected"),
    [
        ("word", "next", " next"),
        ("word", "'s", "'s"),
        ("word", "'em all", " 'em all"),
        ("the students'", "books", " books"),
        ("He said '", "hi", "hi"),
        ('He said "', "hi", "hi"),
        ('"Done," she said', '"Go."', ' "Go."'),
        ('She said, "Well', '" and left.', '" and left.'),
        ("well-", "known", "known"),
        ("$", "5", "5"),
        ("word", "\nnext", "\nnext"),
        ("word ", "next", "next"),
        ("日本", "語", "語"),
    ],
)
def test_seam_space(prompt: str, raw: str, expected: str) -> None:
    assert step("seam_space", prompt, raw).text == expected


def test_trim_length_is_opt_in_and_only_on_length() -> None:
    on = CleanOptions(trim_on_length=True)
    text = "the sun ro"
    assert step("trim_length", "x", text, options=on, finish_reason="length").text == "the sun"
    assert step("trim_length", "x", text, options=on, finish_reason="max_tokens").text == "the sun"
    assert step("trim_length", "x", text, options=on, finish_reason="stop").ops == ()
    assert step("trim_length", "x", text, finish_reason="length").ops == ()
    assert step("trim_length", "x", "the sun rose.", options=on, finish_reason="length").ops == ()
    assert step("trim_length", "x", "oneword", options=on, finish_reason="length").ops == ()


# ---------------------------------------------------------------------------
# Verdicts and the entry point
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "verdict"),
    [
        ("I can't help with that request.", "refusal"),
        ("I apologize, but I won't be able to write that.", "refusal"),
        ("This violates the content policy, so I'll stop here.", "refusal"),
        ("I'd be happy to continue! The wind rose.", "preamble"),
        ("The wind rose.", "ok"),
    ],
)
def test_chat_verdicts(raw: str, verdict: str) -> None:
    assert clean("The night was dark.", raw, "system").verdict == verdict


def test_custom_steps_and_errors() -> None:
    raw = "Sure, here's the continuation:\n\nbody"
    only_space = CleanOptions(steps=("seam_space",))
    assert clean("x", raw, "system", options=only_space).text == " " + raw
    with pytest.raises(ValueError, match="unknown cleanup steps"):
        clean("x", raw, "system", options=CleanOptions(steps=("nope",)))
    with pytest.raises(ValueError, match="unknown emulation method"):
        clean("x", raw, "telepathy")
    with pytest.raises(ValueError, match="does not belong"):
        clean("x", raw, "system", prepared=Prepared("y"))


def test_cleaned_record() -> None:
    got = clean("The end", "Sure, here's the continuation:\n\nof it.", "system")
    record = got.to_record()
    assert record["verdict"] == "ok" and record["raw"] == got.raw
    assert record["ops"] == [dict(o) for o in got.ops]
    assert [o["op"] for o in got.ops] == ["strip_preamble", "insert_space"]
    assert "raw" not in clean("x", " y", "completion").to_record()


def test_every_method_has_a_cleanup_profile() -> None:
    assert set(METHODS) == set(cleanup.PROFILES)
    for profile in cleanup.PROFILES.values():
        assert set(profile.steps) <= set(cleanup.STEPS)
        assert set(profile.checks) <= set(cleanup.CHECKS)
    # Text methods that reply rather than continue in place are the ones cleanup unwraps.
    replying = {
        m for m, spec in METHODS.items() if not (spec.in_place or spec.conversation) and m != "off"
    }
    assert replying == set(cleanup.CHAT_METHODS)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

_ALPHABET = st.sampled_from([*"abcdeXYZ  \n\t.,;:!?'\"-—’“”（）你好日本", "Sure", "Here's"])
texts = st.lists(_ALPHABET, max_size=40).map("".join)


@settings(deadline=None, max_examples=300)
@given(
    prompt=texts, raw=texts, finish=st.sampled_from([None, "stop", "length"]), trim=st.booleans()
)
def test_completion_output_is_never_edited(
    prompt: str, raw: str, finish: str | None, trim: bool
) -> None:
    """In-place output changes only in seam whitespace and the opt-in length trim."""
    got = clean(prompt, raw, "completion", finish, CleanOptions(trim_on_length=trim))
    ops = {o["op"] for o in got.ops}
    assert ops <= {"restore_trailing", "trim_length"}
    if "trim_length" in ops:
        assert raw.lstrip().startswith(got.text.lstrip())
        assert re.fullmatch(r"\s+\w+", raw.lstrip()[len(got.text.lstrip()) :])
    else:
        assert got.text.lstrip() == raw.lstrip()
    if not prompt[-1:].isspace() and "trim_length" not in ops:
        assert got.text == raw


@settings(deadline=None, max_examples=300)
@given(prompt=texts, raw=texts)
def test_overlap_only_removes_the_prompt_tail(prompt: str, raw: str) -> None:
    n = overlap(prompt, raw)
    assert 0 <= n <= len(raw)
    if n:
        fold, _ = cleanup._fold(prompt.rstrip())
        removed = raw[:n].lstrip()
        if removed[:1] in cleanup._OPEN_QUOTES and prompt.rstrip()[-1:] not in cleanup._OPEN_QUOTES:
            removed = removed[1:]  # an opening quote glued to the echo goes with it
        echoed, _ = cleanup._fold(removed)
        assert fold.endswith(echoed)
        assert len(removed.strip()) <= len(prompt.rstrip())


@settings(deadline=None, max_examples=200)
@given(prompt=texts, tail=texts, new=texts)
def test_an_echoed_long_tail_is_removed(prompt: str, tail: str, new: str) -> None:
    """A reply that starts by repeating a long tail of the prompt loses at least that tail."""
    full = (prompt + " " + "the old stone bridge " + tail).rstrip()
    start = full.rfind("the old stone bridge")
    echo = full[start:]
    assert overlap(full, echo + new) >= len(echo)


@settings(deadline=None, max_examples=300)
@given(prompt=texts, raw=texts, method=st.sampled_from(sorted(METHODS)), rewind=st.booleans())
def test_clean_never_crashes_and_prepares_consistently(
    prompt: str, raw: str, method: str, rewind: bool
) -> None:
    prepared = prepare_prompt(prompt, rewind=rewind)
    assert prepared.original == prompt
    assert not prepared.text[-1:].isspace()
    got = clean(prompt, raw, method, prepared=prepared)
    assert got.verdict in get_args(cleanup.Verdict)
    if method == "off":
        assert got.text == raw and got.ops == ()
    for op in got.ops:
        assert op["op"] in cleanup.STEPS or op["op"] in {"insert_space", "rewind_mismatch"}


@pytest.mark.parametrize(
    ("prompt", "raw"),
    [
        (" " * 20000 + "x", " " * 20000 + "y"),
        ("word " * 20000, "Sure! " + " " * 20000 + "z"),
        ("a" * 50000 + ".", "\n" * 20000 + "---" + " " * 20000 + "q"),
    ],
    ids=["spaces", "ack-then-spaces", "long-word"],
)
@pytest.mark.parametrize("method", ["system", "completion"])
@pytest.mark.timeout(30)  # linear: about 1 s on a loaded 2-core machine; the bug took 40 s
def test_long_inputs_clean_in_linear_time(prompt: str, raw: str, method: str) -> None:
    """Whitespace runs once made the preamble patterns backtrack quadratically (40 s)."""
    cleaned = clean(prompt, raw, method, "length", CleanOptions(trim_on_length=True))
    assert cleaned.raw == raw
    assert prepare_prompt(prompt, rewind=True).original == prompt


# ---------------------------------------------------------------------------
# Framing requests
# ---------------------------------------------------------------------------

PROMPT = "The lighthouse keeper waited "


def test_completion_request_is_the_document_without_trailing_space() -> None:
    req, framing = build_request("completion", PROMPT, "davinci-002", 3, {"temperature": 0.9})
    assert req.prompt == PROMPT.rstrip() and req.messages is None and req.n == 3
    assert framing.trailing == " " and framing.stitch and framing.prefill is None
    assert framing.to_record() == {
        "method": "completion",
        "framing": FRAMING_VERSION,
        "trailing": " ",
    }


def test_completion_cannot_carry_a_seed_phrase() -> None:
    req, framing = build_request("completion", PROMPT, "m", seed_phrase="variation 1: x")
    assert "variation" not in (req.prompt or "")
    assert framing.seed_phrase is None and framing.notes


def test_prefill_request_and_flags() -> None:
    caps = lookup("deepseek", "deepseek-chat")
    req, framing = build_request("prefill", PROMPT, "deepseek-chat", caps=caps)
    assert req.messages is not None and req.messages[-1] == {
        "role": "assistant",
        "content": PROMPT.rstrip(),
    }
    flagged = req.extra["messages"]
    assert flagged[-1]["prefix"] is True and flagged[:-1] == req.messages[:-1]
    assert framing.prefill == PROMPT.rstrip() and framing.stitch
    # Anthropic: no flag, and never a prefill ending in whitespace.
    req2, _ = build_request("prefill", "Text\n\n", "claude-3-opus", caps=lookup("anthropic", "x"))
    assert req2.messages is not None and req2.messages[-1]["content"] == "Text"
    assert "messages" not in req2.extra


def test_prefill_with_empty_prompt_has_no_open_turn() -> None:
    req, framing = build_request("prefill", "", "m")
    assert req.messages is not None and req.messages[-1]["role"] == "user"
    assert framing.prefill is None and framing.notes


def test_template_request_server_fields() -> None:
    req, _ = build_request("template", PROMPT, "m")
    assert req.extra == {"continue_final_message": True, "add_generation_prompt": False}
    llama, _ = build_request("template", PROMPT, "m", caps=lookup("llamacpp", "any"))
    assert llama.extra == {}
    qwen, _ = build_request(
        "template", PROMPT, "Qwen/Qwen3-8B", caps=lookup("vllm", "Qwen/Qwen3-8B")
    )
    assert qwen.extra["chat_template_kwargs"] == {"enable_thinking": False}
    assert qwen.extra["continue_final_message"] is True


def test_system_and_fewshot_requests() -> None:
    req, framing = build_request("system", "Para one.\n\n", "gpt-4o")
    assert req.messages is not None
    system, user = req.messages
    assert system["role"] == "system" and "continuation engine" in system["content"]
    assert user == {"role": "user", "content": "<document>Para one.\n\n</document>"}
    assert not framing.stitch
    few, _ = build_request("fewshot", "Para one.", "gpt-4o")
    assert few.messages is not None and few.messages[0]["content"].count("<continuation>") == 3


def test_seed_phrase_stays_out_of_the_document() -> None:
    phrase = seed_phrase("node-7", 2)
    for method in ("template", "prefill", "system", "fewshot", "off"):
        req, framing = build_request(method, PROMPT, "m", seed_phrase=phrase)
        assert req.messages is not None
        assert phrase in req.messages[0]["content"], method
        assert all(phrase not in m["content"] for m in req.messages[1:]), method
        assert framing.seed_phrase == phrase


def test_system_message_and_off() -> None:
    req, framing = build_request("system", PROMPT, "m", system_message="Continue the poem.")
    assert req.messages is not None and req.messages[0]["content"] == "Continue the poem."
    assert framing.to_record()["custom_system"] is True
    off, _ = build_request("off", PROMPT, "m")
    assert off.messages == [{"role": "user", "content": PROMPT}]


def test_requests_drop_parameters_the_model_rejects() -> None:
    params = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 50}
    req, framing = build_request(
        "system", PROMPT, "gpt-5", params=params, caps=lookup("openai", "gpt-5")
    )
    assert req.params == {"max_tokens": 50}
    assert set(framing.adjusted) == {"temperature", "top_p"}
    claude, _ = build_request(
        "prefill",
        PROMPT,
        "claude-opus-4-1",
        params=params,
        caps=lookup("anthropic", "claude-opus-4-1"),
    )
    assert claude.params == {"temperature": 0.7, "max_tokens": 50}  # one of the exclusive pair


def test_unknown_method_or_version() -> None:
    with pytest.raises(ConfigError):
        build_request("telepathy", PROMPT, "m")
    with pytest.raises(ConfigError, match="framing version"):
        build_request("system", PROMPT, "m", framing_version="0")
    assert FRAMING_VERSION in emulate.FRAMINGS


def test_seed_phrases_are_deterministic_and_varied() -> None:
    assert seed_phrase(1, 0) == seed_phrase(1, 0)
    phrases = {seed_phrase("doc", i) for i in range(20)}
    assert len(phrases) == 20
    assert len({p.split(": ", 1)[1] for p in phrases}) >= 6  # the nudges vary, not only the code


def test_build_then_clean_round_trip() -> None:
    """A framing's prepared prompt is what cleanup needs to join the reply."""
    prompt = "The committee will reconvene on Thurs"
    _, framing = build_request("completion", prompt, "m", rewind=True)
    got = clean(prompt, " Thursday morning.", "completion", prepared=framing.prepared)
    assert prompt + got.text == "The committee will reconvene on Thursday morning."
    request, chat = build_request("system", prompt, "m", rewind=True)
    assert request.messages is not None and "Thurs" not in request.messages[1]["content"]
    got = clean(prompt, "Thursday morning.", "system", prepared=chat.prepared)
    assert prompt + got.text == "The committee will reconvene on Thursday morning."
    _, off = build_request("off", prompt + " ", "m", rewind=True)
    assert off.to_record() == {"method": "off", "framing": FRAMING_VERSION}


# ---------------------------------------------------------------------------
# Choosing methods
# ---------------------------------------------------------------------------

RAW = Capabilities(raw_prompt=True)
CHAT = Capabilities(chat=True)
CHAT_PREFILL = Capabilities(chat=True, prefill=True)
SERVER = Capabilities(raw_prompt=True, chat=True, prefill=True, n=True)


@pytest.mark.parametrize(
    ("caps", "kind", "provider", "model", "expected"),
    [
        (RAW, None, "openai", "davinci-002", ["completion"]),
        (SERVER, "base", "vllm", "meta-llama/Llama-3.1-8B", ["completion"]),
        (
            SERVER,
            "instruct",
            "vllm",
            "Qwen/Qwen3-8B",
            ["completion", "template", "system", "fewshot"],
        ),
        (CHAT_PREFILL, None, "anthropic", "claude-sonnet-4-5", ["prefill", "system", "fewshot"]),
        (CHAT_PREFILL, None, "anthropic", "claude-opus-4-6", ["system", "fewshot"]),
        (CHAT_PREFILL, None, "anthropic", "claude-opus-4-7", ["system", "fewshot"]),
        (CHAT, None, "deepseek", "deepseek-chat", ["prefill", "system", "fewshot"]),
        (CHAT, "instruct", "vllm", "Qwen/Qwen3-8B", ["template", "system", "fewshot"]),
        (CHAT_PREFILL, None, "moonshot", "kimi-k2.5", ["prefill", "system", "fewshot"]),
        (CHAT, None, "unknown", "mystery", ["system", "fewshot"]),
        (CHAT_PREFILL, "chat", "unknown", "mystery", ["prefill", "system", "fewshot"]),
        (SERVER, None, "unknown", "mystery", ["completion", "prefill", "system", "fewshot"]),
        (RAW, None, "unknown", "mystery", ["completion"]),
    ],
)
def test_choose_method(
    caps: Capabilities, kind: str | None, provider: str, model: str, expected: list[str]
) -> None:
    assert choose_method(caps, kind, lookup(provider, model)) == expected


def test_choose_method_forced_and_impossible() -> None:
    assert choose_method(CHAT, None, None, forced="off") == ["off"]
    assert choose_method(SERVER, None, None, forced="fewshot") == ["fewshot"]
    with pytest.raises(ConfigError, match="raw prompt"):
        choose_method(CHAT, None, None, forced="completion")
    with pytest.raises(ConfigError, match="known to continue"):
        choose_method(CHAT, None, None, forced="prefill")
    with pytest.raises(ConfigError, match="chat messages"):
        choose_method(RAW, None, None, forced="off")
    with pytest.raises(ConfigError, match="model rejects"):
        choose_method(CHAT_PREFILL, None, lookup("anthropic", "claude-opus-4-7"), forced="prefill")
    with pytest.raises(ConfigError, match="unknown"):
        choose_method(CHAT, None, None, forced="psychic")
    with pytest.raises(ConfigError):
        choose_method(Capabilities(), None, None)
    with pytest.raises(ConfigError, match="unknown emulation methods"):
        choose_method(CHAT, None, ModelCaps(methods=("sytem",)))


# ---------------------------------------------------------------------------
# The capability table
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "facts"),
    [
        ("anthropic", "claude-opus-4-7", {"prefill": False, "temperature": False, "max_n": 1}),
        ("anthropic", "claude-opus-4-6", {"prefill": False, "temperature": True}),
        ("anthropic", "claude-sonnet-4-5-20250929", {"prefill": True, "temperature": True}),
        ("anthropic", "claude-sonnet-4-20250514", {"prefill": True}),
        ("openrouter", "anthropic/claude-3.7-sonnet", {"prefill": True}),
        ("openrouter", "anthropic/claude-opus-4.6", {"prefill": False}),
        ("anthropic", "claude-9-future", {"prefill": False, "temperature": False}),
        ("openai", "gpt-5.1", {"temperature": 1.0, "top_p": False}),
        ("openai", "o3-mini", {"temperature": 1.0}),
        ("openai", "gpt-4o", {"temperature": True, "max_top_logprobs": 20}),
        ("openai", "davinci-002", {"kind": "base", "methods": ("completion",)}),
        ("google", "gemini-3-pro", {"recommended": {"temperature": 1.0}}),
        ("deepseek", "deepseek-chat", {"prefill_flag": "prefix"}),
        ("mistral", "mistral-large-latest", {"prefill_flag": "prefix"}),
        ("moonshot", "kimi-k2.5", {"prefill_flag": "partial"}),
        ("dashscope", "qwen-plus", {"prefill_flag": "partial"}),
        ("hyperbolic", "meta-llama/Meta-Llama-3.1-405B", {"kind": "base"}),
        ("together", "some-org/model-base", {"kind": "base"}),
        ("embedded", "gemma-3-270m", {"kind": "base", "methods": ("completion",)}),
    ],
)
def test_table_lookup(provider: str, model: str, facts: dict[str, Any]) -> None:
    caps = lookup(provider, model)
    assert {k: getattr(caps, k) for k in facts} == facts
    assert caps.sources


def test_fixed_sampling() -> None:
    assert lookup("openai", "gpt-5").fixed_sampling
    assert lookup("anthropic", "claude-opus-4-7").fixed_sampling
    assert not lookup("openai", "gpt-4o").fixed_sampling


def test_most_specific_entry_wins() -> None:
    table = load_table()
    rows = table.matching("anthropic", "claude-sonnet-4-5")
    assert (rows[0].provider, rows[0].match) == ("anthropic", ("*",))
    assert "*claude-*-4-5*" in rows[-1].match
    assert table.lookup("nobody", "nothing") == ModelCaps()


def test_user_override_file(tmp_path: Path) -> None:
    path = tmp_path / "caps.toml"
    path.write_text(
        '[[models]]\nprovider = "*"\nmatch = "*"\nmethods = ["fewshot"]\n'
        'notes = "mine"\n\n[[models]]\nprovider = "myhost"\nmatch = "my-*"\nkind = "base"\n',
        "utf-8",
    )
    caps = lookup("anthropic", "claude-sonnet-4-5", override=path)
    assert caps.methods == ("fewshot",)  # user rows come after every shipped row
    assert caps.prefill is True and caps.notes[-1] == "mine"
    assert caps.sources[-1].startswith(str(path))
    assert lookup("myhost", "my-model", override=path).kind == "base"
    assert lookup("anthropic", "x", override=tmp_path / "missing.toml") == lookup("anthropic", "x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[models]]\nmatch = '*'\ncolour = 'red'\n", "unknown fields"),
        ("[[models]]\nmatch = '*'\nprefill = 'yes'\n", "prefill must be"),
        ("[[models]]\nmatch = '*'\nkind = 'robot'\n", "kind must be"),
        ("[[models]]\nprefill = true\n", "match must be"),
        ("[[models]]\nmatch = '*'\nprefill_flag = 'pre'\n", "prefill_flag"),
        ("models = 3\n", "array of tables"),
        ("colour = 1\n", "unknown top-level"),
        ("[[models]\n", "not valid TOML"),
        ("version = 2\n", "unsupported table version"),
    ],
)
def test_bad_override_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "caps.toml"
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigError, match=message):
        load_table(path)


def test_shipped_table_is_loaded_once_and_valid() -> None:
    assert capmod.shipped_entries() is capmod.shipped_entries()
    for entry in capmod.shipped_entries():
        for method in entry.facts.get("methods", ()):
            assert method in METHODS, entry.label


def test_apply_limits() -> None:
    caps = ModelCaps(temperature=False, top_k=False, logprobs=True, max_top_logprobs=5)
    params, why = apply_limits({"temperature": 0.5, "top_k": 40, "logprobs": 10, "seed": 1}, caps)
    assert params == {"logprobs": 5, "seed": 1}
    assert set(why) == {"temperature", "top_k", "logprobs"}
    one = ModelCaps(temperature=1.0)
    assert apply_limits({"temperature": 1.0}, one) == ({"temperature": 1.0}, {})
    assert apply_limits({}, one) == ({}, {})
    pair = ModelCaps(exclusive=(("temperature", "top_p"),))
    assert apply_limits({"top_p": 0.9}, pair) == ({"top_p": 0.9}, {})


# ---------------------------------------------------------------------------
# Frames (issue 15): what each version sends, and leaks of it
# ---------------------------------------------------------------------------


def test_open_turn_follows_one_short_user_turn_and_version_1_stays_readable() -> None:
    req, framing = build_request("template", PROMPT, "m", caps=lookup("llamacpp", "any"))
    assert req.messages == [
        {"role": "user", "content": "Continue the text."},
        {"role": "assistant", "content": PROMPT.rstrip()},
    ]
    assert framing.version == FRAMING_VERSION == "2" and framing.frame == ("Continue the text.",)
    # Nodes made with version 1 can still be re-framed exactly as they were.
    old, old_framing = build_request("template", PROMPT, "m", framing_version="1")
    assert old.messages is not None and [m["role"] for m in old.messages] == [
        "system",
        "user",
        "assistant",
    ]
    assert old.messages[1]["content"] == "<cmd>cat untitled.txt</cmd>"
    assert old_framing.frame == (old.messages[0]["content"], old.messages[1]["content"])


def test_framing_records_what_it_sent_besides_the_document() -> None:
    system, framing = build_request("system", PROMPT, "m")
    assert system.messages is not None
    assert framing.frame == (system.messages[0]["content"], "<document>\n</document>")
    assert PROMPT.strip() not in "".join(framing.frame)
    _, fewshot = build_request("fewshot", PROMPT, "m")
    assert "he found he had forgotten how to wave" in fewshot.frame[0]
    _, raw = build_request("completion", PROMPT, "m")
    assert raw.frame == ()
    _, seeded = build_request("prefill", PROMPT, "m", seed_phrase="variation 1: go on")
    assert any("variation 1: go on" in text for text in seeded.frame)
    _, custom = build_request("template", PROMPT, "m", system_message="You write sea stories.")
    assert custom.frame == ("You write sea stories.", "Continue the text.")
    # An empty document has no turn to continue: an opening is asked for instead.
    empty, opening = build_request("template", "", "m")
    assert empty.messages is not None and empty.messages[-1]["role"] == "user"
    assert opening.prefill is None and opening.notes


def test_leaks_ignore_what_the_document_says_and_filler() -> None:
    from loom.emulation.leaks import Leaks

    frame = ["Write the text that comes next in that document.", "Continue the text."]
    leaks = Leaks(frame, "A story.")
    assert leaks.find("and then. Write the text that comes next, she said.") is not None
    assert leaks.find("in the middle of the night, in the end") is None  # filler only
    found = leaks.find("The boat. continue the TEXT")
    assert found is not None and found.what == "continue the TEXT"
    # The document says it: no leak.
    assert Leaks(frame, "Continue the text. ").find("Continue the text.") is None
    assert not Leaks([], "Plain prose.")._phrases
    # Tags are the frame's own only when the document has none of them.
    tagged = Leaks(["<document>\n</document>"], "Plain.")
    assert tagged.find("fine </document>") is not None
    assert Leaks(["<document>\n</document>"], "<document>x").find("</document>") is None


_CLEAN_WORDS = st.sampled_from(
    [
        "river",
        "stone",
        "light",
        "morning",
        "harbour",
        "lantern",
        "walked",
        "carried",
        "quietly",
        "green",
        "old",
        "across",
        "under",
        "beyond",
        "slowly",
        "bread",
        "window",
        "garden",
    ]
)
_PUNCT = st.sampled_from([" ", " ", " ", ", ", ". ", ".\n", "; ", "\n\n"])


@st.composite
def prose(draw: st.DrawFn) -> str:
    """Plain prose of ordinary words: no frame words, no assistant talk, no prompt echo."""
    words = draw(st.lists(_CLEAN_WORDS, min_size=1, max_size=30))
    seps = draw(st.lists(_PUNCT, min_size=len(words), max_size=len(words)))
    text = "".join(w + s for w, s in zip(words, seps, strict=True)).rstrip()
    return text[0].upper() + text[1:]


_PROMPTS = st.sampled_from(
    [
        "The keeper counted the ships and",
        "Chapter one\n\n",
        "She said nothing, ",
        "The tide turned.",
        "Notes:\n- salt\n-",
    ]
)


@settings(deadline=None, max_examples=200)
@given(prompt=_PROMPTS, text=prose(), method=st.sampled_from(["completion", "template", "prefill"]))
def test_clean_text_survives_in_place_cleanup_unchanged(
    prompt: str, text: str, method: str
) -> None:
    """A clean continuation produced in place is kept exactly, seam whitespace aside."""
    raw = (" " if not prompt[-1].isspace() else "") + text
    _, framing = build_request(method, prompt, "m")
    got = clean(prompt, raw, method, prepared=framing.prepared, frame=framing.frame)
    assert (got.text, got.verdict) == (raw, "ok"), got.ops


@settings(deadline=None, max_examples=200)
@given(prompt=_PROMPTS, text=prose(), method=st.sampled_from(["system", "fewshot"]))
def test_clean_text_survives_chat_cleanup_with_only_the_seam_fixed(
    prompt: str, text: str, method: str
) -> None:
    _, framing = build_request(method, prompt, "m")
    got = clean(prompt, text, method, prepared=framing.prepared, frame=framing.frame)
    joined = " " + text if not prompt[-1].isspace() and prompt[-1] != "-" else text
    assert got.verdict == "ok", got.ops
    assert got.text in (joined, " " + text, text)
    assert got.text.strip() == text.strip()


@settings(deadline=None, max_examples=100)
@given(prompt=_PROMPTS, text=prose(), method=st.sampled_from(["template", "system", "fewshot"]))
def test_a_frame_phrase_after_clean_text_is_cut_exactly_there(
    prompt: str, text: str, method: str
) -> None:
    _, framing = build_request(method, prompt, "m")
    leak = (
        "\n\nContinue the text." if method == "template" else "\n\nexactly as it would appear there"
    )
    if len(re.findall(r"\w+", text)) < 2:
        text += " and more words."
    got = clean(prompt, text + leak, method, prepared=framing.prepared, frame=framing.frame)
    assert got.verdict == "ok" and "cut_leak" in [o["op"] for o in got.ops]
    assert got.text.strip() == text.strip().rstrip("-–—*_#>")


def test_choose_method_on_local_servers() -> None:
    chat_with_raw = Capabilities(chat=True, raw_prompt=True, n=True)
    chain = ["completion", "template", "system", "fewshot"]
    assert choose_method(chat_with_raw, "chat", lookup("llamacpp", "smollm2")) == chain
    assert choose_method(SERVER, "chat", lookup("embedded", "smollm2-135m-instruct")) == chain
    assert choose_method(SERVER, None, lookup("embedded", "gemma-3-270m")) == ["completion"]
    # A chat backend without the raw endpoint still gets the open turn first.
    assert choose_method(CHAT, "chat", lookup("llamacpp", "x"))[0] == "template"
    assert choose_method(CHAT, "chat", lookup("ollama", "llama3"))[0] == "template"
    assert emulate.wire_problem("completion", CHAT) and not emulate.wire_problem("template", CHAT)


def test_probe_records_the_open_turn_it_saw_work(tmp_path: Path) -> None:
    from loom.emulation.probe import save_methods

    path = tmp_path / "caps.toml"
    save_methods(path, "llamacpp", "smollm2", ["template", "completion"], prefill=True)
    save_methods(path, "vllm", "other", ["system"])
    save_methods(path, "llamacpp", "smollm2", ["completion", "template"], prefill=True)
    caps = lookup("llamacpp", "smollm2", override=path)
    assert caps.methods == ("completion", "template") and caps.prefill is True
    assert lookup("vllm", "other", override=path).methods == ("system",)
    assert path.read_text().count("[[models]]") == 2


# ---------------------------------------------------------------------------
# Real outputs read by hand (tests/data/emulation_read.json)
# ---------------------------------------------------------------------------

READ = json.loads((Path(__file__).parent / "data" / "emulation_read.json").read_text("utf-8"))


def test_the_verdict_agrees_with_a_careful_reader() -> None:
    """408 outputs of a real small instruct model, each read by hand: the verdict rejects
    most of what a reader rejects, and almost nothing a reader keeps."""
    flagged = missed = false_alarms = kept = 0
    for case in READ["outputs"]:
        got = run_case(case)
        if case["reader"] == "reject":
            flagged += not got.ok
            missed += got.ok
        else:
            false_alarms += not got.ok
            kept += got.ok
    assert flagged + missed == 142 and false_alarms + kept == 266
    assert flagged / (flagged + missed) >= 0.9, (flagged, missed)  # 130 of 142
    assert false_alarms <= 3, false_alarms  # ~1%


def test_in_place_methods_keep_what_a_reader_keeps() -> None:
    """Raw completion and the open turn (framing 2): every output a reader kept is kept as is."""
    for case in READ["outputs"]:
        if case["method"] in ("completion", "template") and case["reader"] == "accept":
            got = run_case(case)
            assert got.ok, (case["prompt"], case["raw"], got.verdict)
