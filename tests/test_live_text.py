"""`loom.emulation.live`: what of a streaming reply may be passed on before it ends."""

from __future__ import annotations

import re

from loom.emulation.cleanup import prepare_prompt
from loom.emulation.framing import Framing
from loom.emulation.live import HOLD_START, LiveText
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


def test_after_the_start_a_completion_streams_delta_by_delta() -> None:
    stream = live("The keeper", "completion")
    head = " woke to find the sea gone and the lamp still burning"
    assert stream.feed(head) == head  # long enough to judge the start: it all goes
    assert stream.feed(" on") == " on" and stream.feed(" the rock.") == " the rock."
    assert stream.finish(head + " on the rock.") == ""
