"""Read big JSON documents a value at a time, so memory stays bounded by the largest single value.

Chat exports are JSON arrays (Slack day files, users.json) or an object holding one huge array (a
DiscordChatExporter file's `messages`). The standard library has no incremental parser, so `JsonReader`
keeps a text buffer over a file and hands each complete value to `json.JSONDecoder.raw_decode`, reading
more only when the value is cut off at the buffer's end.

    reader = JsonReader(fp, name="general/2016-01-15.json")
    for message in reader.iter_array():           # a top-level array
        ...
    for key in reader.iter_object():               # a top-level object: the reader stops at each value
        if key == "messages":
            for message in reader.iter_array():
                ...
        else:
            reader.read_value()

Malformed JSON raises `json.JSONDecodeError` (its message names the file); a value larger than
`max_value_chars` raises one too, so a broken file can never make us read it all into memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()
_NUMBER_CHARS = "0123456789.eE+-"
# raw_decode cannot tell "cut off" from "wrong"; an error this close to the buffer's end may be either.
_NEAR_END = 16


class JsonReader:
    def __init__(
        self, fp: TextIO, *, name: str = "<json>", chunk_chars: int = 1 << 16, max_value_chars: int = 1 << 26
    ) -> None:
        self._fp = fp
        self.name = name
        self._chunk = chunk_chars
        self._max = max_value_chars
        self._buf = ""
        self._pos = 0
        self._eof = False

    # ---- buffer -------------------------------------------------------------------------------------

    def _read_more(self, at_least: int) -> bool:
        """Append at least `at_least` characters (fewer at end of file); False at end of file."""
        if self._eof:
            return False
        if self._pos > len(self._buf) // 2:  # drop what has been consumed before growing
            self._buf = self._buf[self._pos :]
            self._pos = 0
        data = self._fp.read(max(at_least, self._chunk))
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _error(self, message: str) -> json.JSONDecodeError:
        return json.JSONDecodeError(f"{self.name}: {message}", self._buf, self._pos)

    def _peek(self) -> str:
        """The next non-blank character without consuming it; '' at end of file."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._read_more(self._chunk):
                return ""

    def _expect(self, char: str) -> None:
        found = self._peek()
        if found != char:
            raise self._error(f"expected {char!r}, found {found or 'end of file'!r}")
        self._pos += 1

    # ---- values -------------------------------------------------------------------------------------

    def read_value(self) -> Any:
        """Decode the next whole value (an object, a string, a number...)."""
        self._peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                cut_off = exc.pos >= len(self._buf) - _NEAR_END or exc.msg.startswith("Unterminated string")
                if not cut_off:
                    raise self._error(f"{exc.msg} (character {exc.pos - self._pos} of a value)") from None
                if len(self._buf) - self._pos > self._max:
                    raise self._error(f"a value longer than {self._max} characters") from None
                # Grow geometrically: re-decoding after each small chunk would be quadratic on a big value.
                if not self._read_more(len(self._buf) - self._pos):
                    raise self._error(f"{exc.msg} at end of file") from None
                continue
            # A number cut by the buffer's end ("-4" of "-4.5e10") decodes fine: make sure it has ended.
            number = isinstance(value, int | float) and not isinstance(value, bool)
            cut = end == len(self._buf) or (number and not self._buf[end:].lstrip(_NUMBER_CHARS))
            if cut and not self._eof and self._read_more(self._chunk):
                continue
            self._pos = end
            return value

    def iter_array(self) -> Iterator[Any]:
        """Yield each element of the array that starts here."""
        self._expect("[")
        if self._peek() == "]":
            self._pos += 1
            return
        while True:
            yield self.read_value()
            sep = self._peek()
            self._pos += 1
            if sep == "]":
                return
            if sep != ",":
                self._pos -= 1
                raise self._error(f"expected ',' or ']' in an array, found {sep or 'end of file'!r}")

    def iter_object(self) -> Iterator[str]:
        """Yield each key of the object that starts here; the caller must consume its value before the
        next key (read_value, or iter_array to the end)."""
        self._expect("{")
        if self._peek() == "}":
            self._pos += 1
            return
        while True:
            if self._peek() != '"':
                raise self._error("expected a key in an object")
            key = self.read_value()
            self._expect(":")
            yield key
            sep = self._peek()
            self._pos += 1
            if sep == "}":
                return
            if sep != ",":
                self._pos -= 1
                raise self._error(f"expected ',' or '}}' in an object, found {sep or 'end of file'!r}")

    def peek(self) -> str:
        """The next non-blank character ('' at end of file), to tell an array from an object."""
        return self._peek()

    def at_end(self) -> bool:
        return self._peek() == ""
