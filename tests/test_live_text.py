"""`loom.emulation.live`: what of a streaming reply may be passed on before it ends."""

from __future__ import annotations

import re

from loom.emulation.cleanup import prepare_prompt
from loom.emulation.framing import Framing
from loom.emulation.live import HOLD_BACK, HOLD_START, RECLEAN_EVERY, LiveText
from loom.generation.context import Context


def live(prompt: str, method: str) -> LiveText:
    return LiveText(Framing(method, "1", prepare_prompt(prompt)), Context.of_text(prompt))


def feed_words(stream: LiveText, text: str) -> str:
    """Feed `text` a word at a time (each with its leading space); what was sent."""
    return "".join(stream.feed(word) for word in re.findall(r"\s*\S+", text))


def test_without_emulation_every_delta_passes_through() -> None:
    stream = LiveText()
    assert stream.feed(" a") == " a" and stream.feed(" b") == " b"
    assert stream.finish(" a b") == "" and not stream.diverged


def test_a_chat_preamble_is_never_sent() -> None:
    stream = live("The keeper", "system")
    story = " woke to find the sea gone, and the lamp still burning in the grey light of dawn, " * 4
    raw = "Sure! Here's a continuation:\n\n" + story
    sent = "".join(stream.feed(raw[i : i + 7]) for i in range(0, len(raw), 7))
    assert sent and "Sure" not in sent and story.startswith(sent)
    assert len(sent) < len(story)  # the tail a closing line could sit in is held back
    assert sent + stream.finish(story) == story and not stream.diverged


def test_nothing_is_sent_before_the_start_can_be_judged() -> None:
    stream = live("The keeper", "completion")
    assert stream.feed(" woke") == ""
    assert stream.feed(" " + "x" * HOLD_START)  # enough text: it goes


def test_the_seam_whitespace_is_reconciled_before_sending() -> None:
    """The prompt's trailing space is cut before sending; the model's leading one is dropped."""
    stream = live("The keeper ", "completion")
    text = " woke to find the sea gone and the lamp still burning there"
    sent = feed_words(stream, text)
    assert sent and text.lstrip().startswith(sent)
    assert sent + stream.finish(text.lstrip()) == text.lstrip()


def test_a_final_text_that_disagrees_with_what_was_sent_is_flagged() -> None:
    stream = LiveText()
    stream.feed(" first try")
    assert stream.finish(" a retried answer") == ""
    assert stream.diverged


def test_a_completion_streams_with_a_short_tail_held_back() -> None:
    """In place, cleanup may still cut where the frame or talk about the text begins: the
    last characters wait until more text (or the end) shows they are the document's."""
    stream = live("The keeper", "completion")
    text = " woke to find the sea gone and the lamp still burning on the rock" * 3
    sent = feed_words(stream, text)
    assert sent and text.startswith(sent)
    assert len(text) - HOLD_BACK["completion"] - RECLEAN_EVERY <= len(sent) < len(text)
    assert sent + stream.finish(text) == text and not stream.diverged


def test_a_leak_or_an_explanation_is_never_sent() -> None:
    """Text continued in place that turns into the frame or into talk about itself is cut
    by cleanup; what was streamed before stops short of it."""
    body = " woke to find the sea gone, and the lamp still burning in the grey light." * 2
    for tail in ("\n\nContinue the text.\n\nThe lamp", "\n```\n\nIn this example, the lamp"):
        stream = LiveText(
            Framing("template", "2", prepare_prompt("The keeper"), frame=("Continue the text.",)),
            Context.of_text("The keeper"),
        )
        sent = feed_words(stream, body + tail + " goes out." * 20)
        assert sent and body.startswith(sent), sent
        assert sent + stream.finish(body.rstrip()) == body.rstrip() and not stream.diverged
