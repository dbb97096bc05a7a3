"""A flow file's record as the recorder's hooks see a flow, and those hooks called on it.

mitmproxy's `Flow.from_state` spends most of its time on the two connection objects (every
attribute set through a type check), which the recorder never reads. An import reads the
record's dictionary without them (`tnetstrings.loads_dict`) and makes an `ImportedFlow`: the
flow's id, metadata and error, and its request and response as mitmproxy's own `Request` and
`Response` (as `from_state` makes them, so `pretty_host`, `path`, the headers and the bodies are
mitmproxy's values). A record of an older flow format is decoded whole and
migrated by mitmproxy first (`compat.migrate_flow`).

`replay` then calls the recorder's hooks in the order `mitmdump -nr FILE` triggers them
(`mitmproxy.eventsequence`): requestheaders, responseheaders and response when there is a
response, error when there is an error and no WebSocket. The recorder is the proxy's, from its
hooks on; tests/test_import.py checks that a call recorded live and the same call imported
give equal rows.
"""

from typing import Any

from mitmproxy import flow, http, version
from mitmproxy.io import compat

from addons import tnetstrings

_NOT_READ = frozenset({"client_conn", "server_conn", "backup", "comment", "marked", "is_replay", "intercepted"})
_HOOKS = ("requestheaders", "request", "responseheaders", "response")


class ImportedFlow:
    """What the recorder reads of a flow (see the module docstring)."""

    __slots__ = ("id", "request", "response", "error", "metadata", "websocket")

    def __init__(
        self,
        id: str,
        request: http.Request,
        response: http.Response | None,
        error: flow.Error | None,
        metadata: dict,
        websocket: bool,
    ):
        self.id = id
        self.request = request
        self.response = response
        self.error = error
        self.metadata = metadata
        self.websocket = websocket


def from_record(data: bytes) -> ImportedFlow | None:
    """The flow of one flow-file record (None: not an HTTP flow); ValueError or another exception
    of mitmproxy's when the record is not a readable flow."""
    state = tnetstrings.loads_dict(data, _NOT_READ)
    current = state.get("version") == version.FLOW_FORMAT_VERSION
    if not current:
        whole = tnetstrings.loads(data)
        if not isinstance(whole, dict):
            raise ValueError("not a flow: not a dictionary")
        state = compat.migrate_flow(whole)
    if state["type"] != "http":
        return None
    response = state["response"]
    error = state["error"]
    if current:
        request = _message(http.Request, http.RequestData, state["request"])
        response = _message(http.Response, http.ResponseData, response) if response else None
    else:
        request = http.Request.from_state(state["request"])
        response = http.Response.from_state(response) if response else None
    return ImportedFlow(
        id=state["id"],
        request=request,
        response=response,
        error=flow.Error(error["msg"], error["timestamp"]) if error else None,
        metadata=state["metadata"],
        websocket=bool(state.get("websocket")),
    )


def _message(cls: Any, data_cls: Any, state: dict) -> Any:
    """mitmproxy's Request or Response of a state in the current flow format, as `from_state`
    makes it but without its dataclass's type check (`MessageData.__post_init__`, skipped by
    `python -O` too), most of its cost: the state is what mitmproxy wrote."""
    state["headers"] = http.Headers.from_state(state["headers"])
    if state["trailers"] is not None:
        state["trailers"] = http.Headers.from_state(state["trailers"])
    data = data_cls.__new__(data_cls)
    vars(data).update(state)
    message = cls.__new__(cls)
    message.data = data
    return message


def replay(recorder: object, f: "ImportedFlow | http.HTTPFlow") -> None:
    """Call `recorder`'s hooks on `f` as mitmproxy's event sequence for a finished flow does."""
    for name in _HOOKS:
        if name.startswith("response") and not f.response:
            continue
        hook = getattr(recorder, name, None)
        if hook is not None:
            hook(f)
    if f.error and not f.websocket:
        hook = getattr(recorder, "error", None)
        if hook is not None:
            hook(f)
