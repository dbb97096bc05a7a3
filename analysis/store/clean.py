"""What a segment may hold: valid UTF-8 text, each field within its length cap.

Text reaches a row from places nobody controls: header bytes in any encoding, URL paths, JSON
strings that escape lone surrogates (`"\\ud800"` is valid JSON and not valid Unicode). Parquet
needs UTF-8, and one string that cannot be encoded fails the whole segment it is in. So every
text value goes through `clean_text` before it is stored: lone surrogates (which is also what
undecodable bytes become under `surrogateescape`) are replaced by U+FFFD, and the value is cut
to its field's cap (`FIELD_CAPS`, documented in README, "What the recorder promises"). Short
fields are cut plainly, so equal long values still group together; the content fields end
with `CUT_MARK` saying how long the value was.
"""

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # printable() is used by commands that must start without polars (schema imports it)
    from analysis.store.schema import Column

_SURROGATE = re.compile("[\ud800-\udfff]")

# Characters kept per field; a field not named here gets DEFAULT_CAP.
DEFAULT_CAP = 1024
ATTRIBUTION_CAP = 256
CONTENT_CAP = 4_000_000  # about a million tokens of text
FIELD_CAPS = {
    "team": ATTRIBUTION_CAP,
    "feature": ATTRIBUTION_CAP,
    "user": ATTRIBUTION_CAP,
    "model": 256,
    "model_requested": 256,
    "path": 2048,
    "error": 500,
    "usage_other_models": 65_536,  # JSON: a cut would make it unreadable, and it is small
    "system_prompt": CONTENT_CAP,
    "prompt_text": CONTENT_CAP,
    "request_json": CONTENT_CAP,
    "response_text": CONTENT_CAP,
}
MARKED_FIELDS = {"system_prompt", "prompt_text", "request_json", "response_text"}
CUT_MARK = " …[cut by llm-shadow: {length:,} characters]"


def valid_unicode(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (it then encodes as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def clean_text(value: str, cap: int, marked: bool = False) -> str:
    if len(value) > cap:
        value = value[:cap] + (CUT_MARK.format(length=len(value)) if marked else "")
    return valid_unicode(value)


def clean_row(row: dict, columns: "list[Column]") -> dict:
    """The row with every text field valid and within its cap (in place; returned too)."""
    for name, cap, marked in _text_fields(columns):
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif not isinstance(value, str):  # a number where a provider should have sent a name
            value = str(value)
        if len(value) > cap or not value.isascii():  # ASCII within its cap: nothing to clean
            value = clean_text(value, cap, marked)
        row[name] = value
    return row


_TEXT_FIELDS: dict[int, tuple[list, list[tuple[str, int, bool]]]] = {}


def _text_fields(columns: "list[Column]") -> list[tuple[str, int, bool]]:
    """(name, cap, marked) of each text column, worked out once per column list (every row of
    every call goes through clean_row)."""
    known = _TEXT_FIELDS.get(id(columns))
    if known is None or known[0] is not columns:  # the list is kept: its id cannot be reused
        fields = [
            (c.name, FIELD_CAPS.get(c.name, DEFAULT_CAP), c.name in MARKED_FIELDS)
            for c in columns
            if c.sql_type == "VARCHAR"
        ]
        known = _TEXT_FIELDS[id(columns)] = (columns, fields)
    return known[1]


# C0 and C1 control characters (but tab and newline), DEL, and the bidirectional overrides that
# reorder what a terminal shows: what a stored value must not send to a terminal as is.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def printable(text: str) -> str:
    """`text` safe to print on a terminal: each control character shown as an escape
    (`\\x1b`, `\\r`, `\\u202e`), so a value can neither move the cursor, retitle the window nor
    reorder the line; everything else (tabs and newlines too) is kept."""
    return _CONTROLS.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    if char == "\r":
        return "\\r"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
