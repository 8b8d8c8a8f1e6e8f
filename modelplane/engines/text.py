"""Turning a stream of token bytes into text that is safe to send.

Two things make this more than concatenation: a token may end in the middle of a UTF-8
character, and text that might be the start of a stop string must be held back until
we know whether the stop string completes (the stop string itself is never sent).
"""

from __future__ import annotations

import codecs


class TextStream:
    """Feed token bytes, get releasable text; ``stopped`` turns true at a stop string."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(piece)
        if not self._stop:
            self._held = ""
            return text
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_stop_prefix_suffix(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The text still held back, once generation has ended without a stop string."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
