"""TextStream: stop strings across token boundaries and split UTF-8 characters."""

from __future__ import annotations

from modelplane.engines.text import TextStream


def feed_all(ts: TextStream, pieces: list[bytes]) -> str:
    out = "".join(ts.feed(p) for p in pieces)
    return out + ts.flush()


def test_plain_text_passes_through() -> None:
    assert feed_all(TextStream(), [b"Hel", b"lo", b" world"]) == "Hello world"


def test_stop_string_inside_one_piece_is_cut() -> None:
    ts = TextStream(("END",))
    assert feed_all(ts, [b"abc END def"]) == "abc "
    assert ts.stopped


def test_stop_string_across_pieces_is_never_sent() -> None:
    ts = TextStream(("\n\n",))
    sent = [ts.feed(p) for p in [b"one", b"\n", b"\n", b"two"]]
    assert sent == ["one", "", "", ""]
    assert ts.stopped
    assert ts.flush() == ""


def test_false_start_of_stop_string_is_released() -> None:
    ts = TextStream(("STOP",))
    assert ts.feed(b"ST") == ""
    assert ts.feed(b"AR") == "STAR"
    assert not ts.stopped


def test_held_text_is_flushed_at_end() -> None:
    ts = TextStream(("STOP",))
    assert ts.feed(b"abc ST") == "abc "
    assert ts.flush() == "ST"


def test_split_utf8_character_is_joined() -> None:
    e = "é".encode()
    assert feed_all(TextStream(), [b"caf", e[:1], e[1:], b"!"]) == "café!"


def test_earliest_of_several_stop_strings_wins() -> None:
    ts = TextStream(("b", "c"))
    assert feed_all(ts, [b"a c b"]) == "a "
