"""The recorder's machinery: what it copies off the event loop, the worker that decodes, parses,
prices and writes each call, and the status it reports."""
