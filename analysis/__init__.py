"""Pure parsing, pricing, storage and simulation: nothing in here imports mitmproxy."""
