"""Provider-shaped identifiers (chatcmpl-..., msg_01..., toolu_01..., req_...) drawn from a seeded RNG."""

import random
import string
import uuid

ALNUM = string.ascii_letters + string.digits
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
HEX = "0123456789abcdef"


def _draw(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def openai_completion(rng: random.Random) -> str:
    return "chatcmpl-" + _draw(rng, ALNUM, 29)


def openai_tool_call(rng: random.Random) -> str:
    return "call_" + _draw(rng, ALNUM, 24)


def openai_response(rng: random.Random, prefix: str = "resp") -> str:
    return f"{prefix}_" + _draw(rng, HEX, 50)


def openai_request(rng: random.Random) -> str:
    return "req_" + _draw(rng, HEX, 32)


def openai_fingerprint(rng: random.Random) -> str:
    return "fp_" + _draw(rng, HEX, 10)


def anthropic_message(rng: random.Random) -> str:
    return "msg_01" + _draw(rng, BASE58, 22)


def anthropic_tool_use(rng: random.Random) -> str:
    return "toolu_01" + _draw(rng, BASE58, 22)


def anthropic_request(rng: random.Random) -> str:
    return "req_011C" + _draw(rng, BASE58, 20)


def gemini_response(rng: random.Random) -> str:
    return _draw(rng, ALNUM + "-_", 22)


def cf_ray(rng: random.Random) -> str:
    return _draw(rng, HEX, 16) + "-" + rng.choice(["FRA", "AMS", "CDG", "DUB"])


def obfuscation(rng: random.Random) -> str:
    """OpenAI pads stream chunks with a random `obfuscation` string of varying length."""
    return _draw(rng, ALNUM, rng.randint(2, 14))


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
