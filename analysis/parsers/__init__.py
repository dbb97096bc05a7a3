"""One module per provider wire format. Each exposes `parse(exchange: Exchange) -> Parsed`.

Parsers are pure: bytes in, facts out. They never raise on odd input they can describe
(a cut stream, an error body); they raise ValueError on input they cannot read at all.

A module may also expose the two halves of `parse` apart: `read_request(exchange)` (the
request-side facts, from the request's path and body only) and `read_response(exchange,
parsed)` (the answer's facts, filled into them), with `parse` their composition;
`read_response` assigns the facts' mutable fields anew, never changes them in place (see
_fresh). Enforce mode reads a request before it is sent and its answer when it ends:
`parse(exchange, request_side)` then reads only the answer, not the same request bytes a
second time.
"""

import functools
import importlib
from types import ModuleType

from analysis.parsers.exchange import Exchange, Parsed


def parse(exchange: Exchange, request_side: Parsed | None = None, read_text: bool = True) -> Parsed:
    """The exchange's facts. `request_side`: what `read_request` gave for this exchange's
    request (the same path and body bytes); the request is then not read again.
    `read_text=False` (with `request_side`): the answer's text (response_text, finish_reasons)
    may be left unread where the usage does not need it; enforce mode settles a call with its
    usage and cost alone (analysis.recording.accounting.call_cost)."""
    module = parser_module(exchange.wire_format)
    if request_side is not None and hasattr(module, "read_request"):
        parsed = _fresh(request_side)
        module.read_response(exchange, parsed, read_text)
        return parsed
    return module.parse(exchange)


def read_request(exchange: Exchange) -> Parsed | None:
    """The request-side facts alone, where the wire format's parser reads them apart from the
    answer; None where it does not (then `parse` reads the whole exchange)."""
    module = parser_module(exchange.wire_format)
    reader = getattr(module, "read_request", None)
    return reader(exchange) if reader is not None else None


@functools.cache  # a few wire formats (analysis.parsers.detect), each looked up on every call
def parser_module(wire_format: str) -> ModuleType:
    """The parser of `wire_format`: the module of that name in analysis.parsers."""
    return importlib.import_module(f"analysis.parsers.{wire_format}")


def _fresh(request_side: Parsed) -> Parsed:
    """A copy of the request-side facts to read an answer into, leaving them unchanged, so they
    can be read into again: a copy of their attribute dict, not dataclasses.replace, which costs
    as much as reading the request again. Their mutable parts (usage, other_models,
    finish_reasons, attribution) are shared, not copied: a `read_response` gives the facts it
    reads new ones, never changes those in place (a request side's usage is blank, which
    common.keep_parts_within_whole leaves as it is; tests/test_parsers_cassettes.py checks every
    cassette's request side is unchanged). Copying them cost a settled call (enforce mode, on the
    proxy's event loop) five objects and two Python calls more."""
    parsed = Parsed.__new__(Parsed)
    parsed.__dict__ = request_side.__dict__.copy()
    return parsed
