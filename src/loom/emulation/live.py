"""What of a reply still streaming can be passed on for good: cleaned, with a tail held back.

Cleanup (`loom.emulation.cleanup`) runs when a reply ends: it strips a chat model's
preamble, quotes and closing chatter, and reconciles the seam's whitespace. A front end
that forwards tokens as they come (an SSE endpoint) cannot take text back, so
`LiveText` passes on only what cleanup of the text so far keeps, less a tail that a
later step could still cut, and nothing while the verdict is not "ok" (such a reply
is retried with another method). When the branch ends, `finish` sends the rest of
the final text; `diverged` says when cleanup took back something already sent (rare:
the final text is then the one recorded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.emulation.framing import Framing
    from loom.generation.context import Context

# Characters cleanup may still cut from the end of a reply, by method: chat replies can
# close with "Let me know if…", a quote or a fence; a transcript with the next "User:";
# text continued in place with the frame's words or a paragraph about itself, cut
# where they begin (a phrase or a paragraph's first words: well under 64 characters).
HOLD_BACK = {
    "system": 200,
    "fewshot": 200,
    "transcript": 24,
    "completion": 64,
    "template": 64,
    "prefill": 64,
}
# Methods whose cleanup touches only the reply's start (the seam): once that is passed
# on, the rest streams through without cleaning the growing text again.
START_ONLY = frozenset({"chat"})
# Nothing is passed on before this many characters (or the end): a refusal or a preamble
# is recognised from the reply's first words.
HOLD_START = 48
# Once the start is passed, the growing text is cleaned again after this many new
# characters, not on every delta.
RECLEAN_EVERY = 16


class LiveText:
    """One branch's stream, as text safe to send. Without a framing (no emulation), or
    with method "off", every delta passes through unchanged."""

    def __init__(self, framing: Framing | None = None, context: Context | None = None) -> None:
        self._framing = framing if framing is not None and framing.method != "off" else None
        self._context = context
        self.raw = ""
        self.sent = ""
        self.diverged = False
        self._cleaned_at = 0  # len(raw) when it was last cleaned

    def feed(self, delta: str) -> str:
        """Take `delta` (raw model text); return the new text that may be sent now."""
        self.raw += delta
        if self._framing is None or self._context is None:
            self.sent += delta
            return delta
        framing = self._framing
        if self.sent and framing.method in START_ONLY:
            self.sent += delta
            return delta
        if self.sent and len(self.raw) - self._cleaned_at < RECLEAN_EVERY:
            return ""
        self._cleaned_at = len(self.raw)
        from loom.emulation.cleanup import clean

        cleaned = clean(
            self._context,
            self.raw,
            framing.method,
            prepared=framing.prepared,
            frame=framing.frame,
        )
        if not cleaned.ok or len(cleaned.text) < HOLD_START:
            return ""
        stable = cleaned.text[: len(cleaned.text) - HOLD_BACK.get(framing.method, 0)]
        return self._extend(stable)

    def finish(self, final: str) -> str:
        """The rest of `final` (the branch's text after cleanup and any retry) to send."""
        if final.startswith(self.sent):
            return self._extend(final)
        self.diverged = True
        return ""

    def _extend(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        new, self.sent = text[len(self.sent) :], text
        return new
