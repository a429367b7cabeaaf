"""Bounding what a JSON body would build, while it arrives and before it is parsed.

``json.loads`` builds every object of a body before anyone can count them: 99 MB of
``[{},{},...]`` is 33 million dicts (gigabytes) when the request may hold 1,024 inputs. So
a large body is scanned as its chunks arrive, at C speed (a regular expression finds the
structural characters; strings are skipped with ``bytes.find``), and refused as soon as it
has more top-level items than inputs allowed, nests too deep, or holds more JSON values
than that many inputs of the model could. The scan only counts: whether the body is valid
JSON is still for the parser to say.
"""

from __future__ import annotations

import re

from tungstenkit.app.error_responses import InvalidInput, MalformedBody

#: Deepest nesting of arrays and objects accepted (inputs need 3: list, input, MaskedImage).
MAX_DEPTH = 32

_STRUCTURE = re.compile(rb'["\[\]{},]')
#: The rest of a string, up to (not including) its closing quote; it stops early at a
#: backslash that ends the data, whose escaped character comes in the next chunk.
_STRING_TAIL = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_QUOTE, _COMMA, _OPEN_LIST, _OPEN_OBJECT = b'"'[0], b","[0], b"["[0], b"{"[0]


class JsonShapeGuard:
    """Fed a body chunk by chunk; raises as soon as it is over a bound.

    - more than ``max_items`` items in the top-level list: 422 (``too_long``);
    - nesting deeper than ``max_depth``: 400;
    - more than ``max_values`` JSON values (arrays, objects and the items after a comma)
      in all: 422 (``too_long``).
    """

    def __init__(self, max_items: int, max_values: int, max_depth: int = MAX_DEPTH) -> None:
        self.max_items = max_items
        self.max_values = max_values
        self.max_depth = max_depth
        self.depth = 0
        #: Commas seen in the top-level list (one fewer than its items).
        self.top_commas = 0
        self.values = 0
        self._top_is_list = False
        self._in_string = False
        self._escaped = False

    def feed(self, data: bytes | bytearray) -> None:
        pos = 0
        if self._in_string:
            pos = self._skip_string(data, 0)
            if pos < 0:
                return
        search = _STRUCTURE.search
        while True:
            found = search(data, pos)
            if found is None:
                return
            pos = found.end()
            char = data[pos - 1]
            if char == _QUOTE:
                self._in_string = True
                pos = self._skip_string(data, pos)
                if pos < 0:
                    return
            elif char == _COMMA:
                if self.depth == 1 and self._top_is_list:
                    self._count_item()
                self._count_value()
            elif char == _OPEN_LIST or char == _OPEN_OBJECT:
                if self.depth == 0:
                    self._top_is_list = char == _OPEN_LIST
                self.depth += 1
                if self.depth > self.max_depth:
                    raise MalformedBody(f"The body nests arrays and objects deeper than {self.max_depth} levels")
                self._count_value()
            elif self.depth:
                self.depth -= 1

    def _count_item(self) -> None:
        # A comma at the top level starts one more item: ``n`` commas, ``n + 1`` items.
        self.top_commas += 1
        if self.top_commas >= self.max_items:
            raise InvalidInput(
                [{"loc": ["body"], "msg": f"At most {self.max_items} inputs per request, got more", "type": "too_long"}]
            )

    def _count_value(self) -> None:
        self.values += 1
        if self.values > self.max_values:
            raise InvalidInput(
                [
                    {
                        "loc": ["body"],
                        "msg": f"The body holds more JSON values than {self.max_items} inputs can "
                        f"(at most {self.max_values})",
                        "type": "too_long",
                    }
                ]
            )

    def _skip_string(self, data: bytes | bytearray, pos: int) -> int:
        """The position after the string's closing quote, or -1 if it goes on in the next chunk."""
        if self._escaped:
            self._escaped = False
            pos += 1
        quote = data.find(b'"', pos)
        if data.find(b"\\", pos, quote if quote >= 0 else len(data)) < 0:
            if quote < 0:
                return -1
            self._in_string = False
            return quote + 1
        tail = _STRING_TAIL.match(data, pos)
        end = tail.end() if tail is not None else pos  # (it matches the empty string: never None)
        if end == len(data):
            return -1
        if data[end] == _QUOTE:
            self._in_string = False
            return end + 1
        self._escaped = True  # a backslash ends the data
        return -1
