"""The recorder's settings: one frozen object, built once and handed as is to the worker.

Every setting has one name from end to end: the `llm-shadow proxy` flag `--NAME`, the addon
option `shadow_NAME` (for `mitmdump -s addons/recorder.py --set shadow_NAME=...`), and the
field `NAME` here (dashes become underscores). The recorder builds a `RecorderSettings` from
its options when it starts (`addons.recorder.settings_from_options`); the sink thread or the
worker process receives that object, pickled as is, never a dict unpacked again by key.

Values are checked here, once: a bad one is a `ValueError` whose message names the option.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_QUEUE_LIMIT = 100_000
DEFAULT_SPOOL_LIMIT = 100_000
DEFAULT_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    data: Path  # the data directory recorded into
    content: bool = True  # keep request messages and response text (the `contents` relation)
    flush_interval: float = 1.0  # seconds between writes; a crash loses at most this much
    team_header: str = "x-shadow-team"  # request headers naming the team, feature and end user
    feature_header: str = "x-shadow-feature"
    user_header: str = "x-shadow-user"
    spool_limit: int = DEFAULT_SPOOL_LIMIT  # calls kept while the store cannot be written
    queue_limit: int = DEFAULT_QUEUE_LIMIT  # calls waiting for the worker; 0: no limit (imports)
    max_body: int = DEFAULT_MAX_BODY  # bytes of a body read, before and after content decoding
    log_calls: bool = False  # print one line per call on stderr (`llm-shadow proxy -v`)
    metrics_port: int = 0  # serve Prometheus /metrics on this port of the listen host; 0: off
    otlp_endpoint: str = ""  # send every call to this OTLP/HTTP collector (analysis.recording.otel); "": off
    otlp_content: bool = False  # ... with its prompt and answer text

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", Path(os.fspath(self.data)))
        if not (self.flush_interval > 0 and math.isfinite(self.flush_interval)):
            raise ValueError(f"flush_interval must be a positive number of seconds, got {self.flush_interval!r}")
        for name in ("spool_limit", "queue_limit", "max_body"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"otlp_endpoint must be an http:// or https:// URL, got {self.otlp_endpoint!r}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be a port number (0: off), got {self.metrics_port!r}")
