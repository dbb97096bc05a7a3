"""Token counts llm-shadow computes itself, offline, when the provider reported none.

Counts use tiktoken. o200k_base is the encoding of OpenAI's gpt-4o, gpt-4.1, gpt-4.5, gpt-5,
o1/o3/o4 and gpt-oss families; cl100k_base is that of gpt-4, gpt-3.5 and the text-embedding
models, and it is also the documented APPROXIMATION used for every non-OpenAI model (Claude,
Gemini, Llama, Mistral, DeepSeek, ...): their tokenizers are not public or not bundled, and a
cl100k count is usually within some 10-20% of theirs. Such counts are stored with
usage_source = "estimated", never as the provider's.

The encoding files ship with the project in analysis/tiktoken_cache/ (see SOURCE.txt there), so
no count ever needs the network. When the user's TIKTOKEN_CACHE_DIR holds the file it is used
as tiktoken normally would; otherwise tiktoken is pointed at the bundled folder while it loads
the encoding (under a lock, the variable restored afterwards). Encodings are loaded once.

Estimates are plain text counts: the system prompt, the "role: text" lines of the messages and
the tool definitions for the input (the role labels stand in for the few tokens of per-message
framing); the text that came back (tool-call arguments and reasoning text included) for the
output.
"""

import functools
import os
import threading
from pathlib import Path

import tiktoken

from analysis.parsers.exchange import Parsed
from analysis.parsers.hashing import canonical_json

BUNDLED_CACHE_DIR = Path(__file__).resolve().parent.parent / "tiktoken_cache"
# File names in a tiktoken cache: sha1 of the URL tiktoken downloads the encoding from.
CACHE_FILE_NAMES = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
}
O200K_MODEL_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "gpt-oss",
    "codex",
    "computer-use",
)
DEFAULT_ENCODING = "cl100k_base"

_load_lock = threading.Lock()


def encoding_name_for_model(model: str | None) -> str:
    """o200k_base for OpenAI's recent families, cl100k_base for everything else."""
    name = (model or "").strip().lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" -> "gpt-4o"
    if name.startswith(O200K_MODEL_PREFIXES):
        return "o200k_base"
    return DEFAULT_ENCODING


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name` (cl100k_base or o200k_base), loaded without network."""
    if name not in CACHE_FILE_NAMES:
        raise ValueError(f"no bundled tiktoken encoding named {name!r}")
    user_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if user_dir and (Path(user_dir) / CACHE_FILE_NAMES[name]).is_file():
        return tiktoken.get_encoding(name)
    with _load_lock:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(BUNDLED_CACHE_DIR)
        try:
            return tiktoken.get_encoding(name)
        finally:
            if saved is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved


COUNT_PIECE_CHARS = 1024 * 1024


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text` for `model` (special-token markers count as plain text).

    A long text is counted a piece at a time, each piece ending at a space, so the token list
    held at once stays small (a 50 MB prompt would otherwise need some 400 MB of ints)."""
    if not text:
        return 0
    encoding = get_encoding(encoding_name_for_model(model))
    total, start = 0, 0
    while start < len(text):
        end = start + COUNT_PIECE_CHARS
        if end < len(text):
            space = text.rfind(" ", start + COUNT_PIECE_CHARS // 2, end)
            end = space if space > 0 else end
        total += len(encoding.encode_ordinary(text[start:end]))
        start = end
    return total


def estimate_input_tokens(parsed: Parsed, model: str | None = None) -> int:
    """Input tokens of a parsed request: system prompt, messages and tool definitions."""
    model = model or parsed.model_requested or parsed.model
    total = count_tokens(parsed.system_prompt, model) + count_tokens(parsed.prompt_text, model)
    canonical = parsed.canonical_request or {}
    for key in ("tools", "functions"):
        if canonical.get(key):
            total += count_tokens(canonical_json(canonical[key]), model)
    return total


def estimate_output_tokens(text: str, model: str | None = None) -> int:
    return count_tokens(text, model)
