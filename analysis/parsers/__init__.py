"""One module per provider wire format. Each exposes `parse(exchange: Exchange) -> Parsed`.

Parsers are pure: bytes in, facts out. They never raise on odd input they can describe
(a cut stream, an error body); they raise ValueError on input they cannot read at all.

A module may also expose the two halves of `parse` apart: `read_request(exchange)` (the
request-side facts, from the request's path and body only) and `read_response(exchange,
parsed)` (the answer's facts, filled into them), with `parse` their composition. Enforce mode
reads a request before it is sent and its answer when it ends: `parse(exchange, request_side)`
then reads only the answer, not the same request bytes a second time.
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
    """A copy of the request-side facts that reading an answer into leaves them unchanged
    (its mutable parts copied), so they can be read into again. Copied as a whole attribute dict,
    not with dataclasses.replace, which costs as much as reading the request again (a copied
    dict given as the new object's __dict__ cost a quarter less than filling its own with update)."""
    parsed = Parsed.__new__(Parsed)
    parsed.__dict__ = request_side.__dict__.copy()
    parsed.usage = request_side.usage.copy()
    parsed.other_models = list(request_side.other_models)
    parsed.finish_reasons = list(request_side.finish_reasons)
    parsed.attribution = dict(request_side.attribution)
    return parsed
