"""One module per provider wire format. Each exposes `parse(exchange: Exchange) -> Parsed`.

Parsers are pure: bytes in, facts out. They never raise on odd input they can describe
(a cut stream, an error body); they raise ValueError on input they cannot read at all.
"""

import importlib

from analysis.parsers.exchange import Exchange, Parsed


def parse(exchange: Exchange) -> Parsed:
    module = importlib.import_module(f"analysis.parsers.{exchange.wire_format}")
    return module.parse(exchange)
