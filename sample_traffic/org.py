"""The fictional company whose month is recorded: Kestrel Bank's teams, API keys and people.

Every key is obviously fake (it contains FAKE) and derived from its name, so the same seed always
gives the same keys. Each key belongs to one team and is used from one machine with one SDK.
"""

import hashlib
import random

from sample_traffic.calls import ApiKey

TEAMS = ["support", "growth", "platform", "data", "eng-tools"]
TEAM_SUBNET = {"support": 11, "growth": 12, "platform": 13, "data": 14, "eng-tools": 15}

SDKS = {
    ("openai", "python"): ("OpenAI/Python 1.109.1", "1.109.1"),
    ("openai", "js"): ("OpenAI/JS 5.23.0", "5.23.0"),
    ("anthropic", "python"): ("Anthropic/Python 0.69.0", "0.69.0"),
    ("gemini", "python"): ("google-genai-sdk/1.41.0 gl-python/3.12.11", "1.41.0"),
}


def _fake_secret(provider: str, name: str) -> str:
    digest = hashlib.sha256(f"{provider}:{name}".encode()).hexdigest()
    if provider == "openai":
        return f"sk-proj-FAKE-{name}-{digest[:32]}"
    if provider == "anthropic":
        return f"sk-ant-api03-FAKE-{name}-{digest[:40]}"
    return f"AIzaFAKE-{name}-{digest[:24]}"


def _key(provider: str, team: str, name: str, host: int, lang: str = "python") -> ApiKey:
    user_agent, version = SDKS[(provider, lang)]
    return ApiKey(
        name=name,
        provider=provider,
        secret=_fake_secret(provider, name),
        team=team,
        client_ip=f"10.{TEAM_SUBNET[team]}.0.{host}",
        user_agent=user_agent,
        sdk_version=version,
        sdk_lang=lang,
    )


KEYS = {
    # support
    "support-widget": _key("openai", "support", "support-widget", 21, lang="js"),
    "support-widget-canary": _key("openai", "support", "support-widget-canary", 22, lang="js"),
    "support-pipeline": _key("openai", "support", "support-pipeline", 31),
    "support-summaries": _key("anthropic", "support", "support-summaries", 32),
    # growth
    "growth-notebooks": _key("openai", "growth", "growth-notebooks", 41),
    "growth-insights": _key("gemini", "growth", "growth-insights", 42),
    "growth-studio": _key("gemini", "growth", "growth-studio", 43),
    # platform
    "platform-help-rag": _key("anthropic", "platform", "platform-help-rag", 51),
    "platform-search": _key("openai", "platform", "platform-search", 52),
    "platform-indexer": _key("openai", "platform", "platform-indexer", 53),
    # data
    "data-etl": _key("openai", "data", "data-etl", 61),
    "data-analysts": _key("openai", "data", "data-analysts", 62),
    # eng-tools
    "eng-copilot-openai": _key("openai", "eng-tools", "eng-copilot", 71),
    "eng-copilot-anthropic": _key("anthropic", "eng-tools", "eng-copilot", 72),
    "eng-cli": _key("openai", "eng-tools", "eng-cli", 73),
}

ENGINEERS = [
    "ana.ruiz",
    "ben.okafor",
    "chen.wei",
    "dara.murphy",
    "eli.kowalski",
    "fatima.haddad",
    "gus.lindqvist",
    "hana.sato",
    "ivan.petrov",
    "jo.mensah",
    "kai.werner",
    "lena.costa",
]
AGENTS = [f"agent-{n:03d}" for n in (4, 7, 12, 15, 18, 23, 31, 42, 57, 64)]
ANALYSTS = ["mira.singh", "tom.becker", "noor.aziz", "paul.meyer"]
MARKETERS = ["sofia.greco", "liam.obrien", "yara.nasser"]


def customer_id(rng: random.Random) -> str:
    """A pseudonymous customer id, as the support widget sends it (a few customers come back)."""
    return f"cust_{int(rng.paretovariate(1.2) * 1000) % 90000 + 10000}"
