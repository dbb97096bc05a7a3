"""What one LLM call of the sample month is, before it is put on the wire.

A feature (features.py) decides who calls which model when, with what prompt and what answer;
the result is a `Call`, written in provider-neutral terms. A wire module (wire_openai.py,
wire_anthropic.py, wire_gemini.py) turns a `Call` into the bytes that provider exchanges.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ApiKey:
    name: str  # what the company calls the key, e.g. support-widget
    provider: str  # openai, anthropic, gemini
    secret: str  # obviously fake, e.g. sk-proj-FAKE-support-widget-...
    team: str
    client_ip: str  # the machine that uses this key
    user_agent: str
    sdk_version: str
    sdk_lang: str = "python"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass
class Message:
    role: str  # user, assistant, tool
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role "tool": the call it answers
    tool_name: str | None = None


@dataclass
class Reply:
    """What the model answers when the call succeeds."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning_tokens: int = 0  # hidden reasoning (OpenAI o-series) or thinking (Gemini)


@dataclass
class Call:
    at: float  # unix time the request starts
    key: ApiKey
    api: str  # chat, responses, embeddings, messages, generate_content
    model: str  # as requested
    feature: str
    messages: list[Message] = field(default_factory=list)
    reply: Reply = field(default_factory=Reply)
    system: str = ""
    # A long, stable block (a handbook) sent after the system prompt; providers may cache it.
    context: str = ""
    stream: bool = False
    include_usage: bool = True  # OpenAI chat streams: stream_options.include_usage
    params: dict = field(default_factory=dict)  # temperature, max_tokens, top_p, n, ...
    tools: list[Tool] = field(default_factory=list)
    embedding_inputs: list[str] = field(default_factory=list)
    # Attribution headers the client sends (x-shadow-team/feature/user); empty: none sent.
    shadow_headers: dict[str, str] = field(default_factory=dict)
    body_user: str | None = None  # OpenAI `user` / Anthropic metadata.user_id
    cache_control: bool = False  # Anthropic: a cache breakpoint after the context
    # How it goes wrong, if it does: rate_limited, server_error, overloaded, cut, client_cancel.
    fault: str | None = None
    retry_count: int = 0  # SDK retries before this attempt (x-stainless-retry-count)
    retry_after_s: float | None = None  # set on a fault that tells the client when to retry
