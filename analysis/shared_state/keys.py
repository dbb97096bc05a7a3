"""Wrapped keys: what applications hold instead of the real provider key.

A wrapped key (`lsk-<id>-<secret>`) maps to a team, optionally a feature and a user, an optional
budget, an expiry, and the *name* of the environment variable from which the proxy reads the
real provider key when it starts. The real key is never written anywhere; the wrapped key is
printed once by `llm-shadow keys create` and stored only as a salted SHA-256 of its secret, so
the registry cannot give it back. `<id>` is public: it is the call's `key_id` (`lsk-<id>`) and
what `keys list`, `revoke` and `rotate` name.

The registry lives with the state (--state): in `<data>/keys.json` (mode 0600) for memory
state, in the Redis hash `<prefix>:keys` for Redis. A proxy reads all records at most every
`refresh_s` (0.5 s), so a revocation or rotation reaches every proxy within a second. When the
registry cannot be read (Redis down) the proxy keeps the records it read last (fail-open,
counted); a key it has never seen is unknown.
"""

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import redis

from analysis.shared_state.redis_link import RedisLink
from analysis.shared_state.redis_state import DEFAULT_PREFIX

KEY_PREFIX = "lsk-"
ID_LENGTH = 12
WINDOWS = ("day", "month")
REFRESH_S = 0.5
MISS_REFRESH_S = 0.05  # an unknown id rereads the registry, at most this often


class WrappedKeyError(ValueError):
    """A wrapped-key command that cannot be done (unknown id, bad option)."""


@dataclass(frozen=True)
class WrappedKey:
    """One wrapped key's record, as stored (never the key itself)."""

    id: str
    team: str
    provider_key_env: str
    salt: str
    secret_hash: str
    created_at: float
    feature: str | None = None
    user: str | None = None
    budget_usd: float | None = None
    window: str | None = None  # day | month, with budget_usd
    expires_at: float | None = None
    revoked_at: float | None = None
    rotated_at: float | None = None

    @property
    def key_id(self) -> str:
        """The value of the `key_id` column for calls made with this key."""
        return f"{KEY_PREFIX}{self.id}"

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(self.salt, secret))


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def split_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a wrapped key's text, None when it is not one."""
    if not text.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = text[len(KEY_PREFIX) :].partition("-")
    if not sep or len(key_id) != ID_LENGTH or not secret:
        return None
    return key_id, secret


def new_secret() -> tuple[str, str, str]:
    """(secret, salt, salted hash) of a fresh key."""
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return secret, salt, hash_secret(salt, secret)


# -- where records are kept ------------------------------------------------------------------------


class FileKeys:
    """Records in `<data>/keys.json` (0600), replaced atomically; writers take a lock file."""

    cheap_version = True  # a stat: an unknown key may look for a new file on every call

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "keys.json"

    def read(self) -> dict[str, WrappedKey]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {k: WrappedKey(**v) for k, v in raw.items()}

    def version(self) -> object:
        """Changes whenever the file is replaced."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def write(self, record: WrappedKey) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self.read()
            records[record.id] = record
            text = json.dumps({k: asdict(v) for k, v in sorted(records.items())}, indent=1)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)


class RedisKeys:
    """Records in the Redis hash `<prefix>:keys` (id -> JSON)."""

    def __init__(self, link: RedisLink, prefix: str = DEFAULT_PREFIX):
        self.link, self.hash = link, f"{prefix}:keys"

    def read(self) -> dict[str, WrappedKey]:
        raw = self.link.client.hgetall(self.hash)
        return {k.decode(): WrappedKey(**json.loads(v)) for k, v in raw.items()}

    cheap_version = False  # an unknown key rereads the hash at most every MISS_REFRESH_S

    def version(self) -> object:
        return time.monotonic()  # no cheap change marker: read every refresh

    def write(self, record: WrappedKey) -> None:
        self.link.client.hset(self.hash, record.id, json.dumps(asdict(record)))


# -- the registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """What a wrapped key presented by a client turned out to be."""

    status: str  # active | unknown | revoked | expired
    key: WrappedKey | None = None


class KeyRegistry:
    """Create, list, revoke and rotate wrapped keys; resolve the ones clients present."""

    def __init__(self, source: FileKeys | RedisKeys, refresh_s: float = REFRESH_S):
        self.source, self.refresh_s = source, refresh_s
        self.records: dict[str, WrappedKey] = {}
        self._version: object = None
        self._read_at = float("-inf")
        self.read_failures = 0  # refreshes that failed (Redis away): the last records were used

    # -- commands (the CLI) --
    def create(
        self,
        team: str,
        provider_key_env: str,
        feature: str | None = None,
        user: str | None = None,
        budget_usd: float | None = None,
        window: str | None = None,
        expires_in_s: float | None = None,
        now: float | None = None,
    ) -> tuple[WrappedKey, str]:
        """A new key: (its record, the key's text, shown once)."""
        if budget_usd is not None and window not in WINDOWS:
            raise WrappedKeyError(f"--budget-usd needs --window {' or '.join(WINDOWS)}")
        if window is not None and budget_usd is None:
            raise WrappedKeyError("--window applies to a budget: give --budget-usd too")
        if budget_usd is not None and budget_usd <= 0:
            raise WrappedKeyError("--budget-usd must be positive")
        if not provider_key_env.replace("_", "").isalnum():
            raise WrappedKeyError(f"--provider-key-env {provider_key_env!r}: expected an environment variable name")
        now = time.time() if now is None else now
        existing = self.source.read()
        key_id = secrets.token_hex(ID_LENGTH // 2)
        while key_id in existing:
            key_id = secrets.token_hex(ID_LENGTH // 2)
        secret, salt, digest = new_secret()
        record = WrappedKey(
            id=key_id,
            team=team,
            provider_key_env=provider_key_env,
            salt=salt,
            secret_hash=digest,
            created_at=now,
            feature=feature,
            user=user,
            budget_usd=budget_usd,
            window=window,
            expires_at=None if expires_in_s is None else now + expires_in_s,
        )
        self.source.write(record)
        return record, f"{KEY_PREFIX}{key_id}-{secret}"

    def list(self) -> list[WrappedKey]:
        return sorted(self.source.read().values(), key=lambda k: k.created_at)

    def _get(self, key_id: str) -> WrappedKey:
        key_id = key_id.removeprefix(KEY_PREFIX)
        record = self.source.read().get(key_id)
        if record is None:
            raise WrappedKeyError(f"no wrapped key with id {key_id!r} (see: llm-shadow keys list)")
        return record

    def revoke(self, key_id: str, now: float | None = None) -> WrappedKey:
        record = self._get(key_id)
        if record.revoked_at is None:
            record = replace(record, revoked_at=time.time() if now is None else now)
            self.source.write(record)
        return record

    def rotate(self, key_id: str, now: float | None = None) -> tuple[WrappedKey, str]:
        """A new secret for the same id (same team, budget and spend); the old text stops working."""
        record = self._get(key_id)
        if record.revoked_at is not None:
            raise WrappedKeyError(f"key {key_id!r} is revoked: create a new one")
        secret, salt, digest = new_secret()
        record = replace(record, salt=salt, secret_hash=digest, rotated_at=time.time() if now is None else now)
        self.source.write(record)
        return record, f"{KEY_PREFIX}{record.id}-{secret}"

    # -- the proxy --
    def refresh(self, force: bool = False) -> None:
        """Read the records again when `refresh_s` has passed (or `force`); keep the last ones
        when they cannot be read."""
        now = time.monotonic()
        if not force and now - self._read_at < self.refresh_s:
            return
        self._read_at = now
        try:
            version = self.source.version()
            if version is not None and version == self._version:
                return
            self.records = self.source.read()
            self._version = version
        except (OSError, ValueError, TypeError, redis.RedisError):
            self.read_failures += 1

    def resolve(self, text: str, now: float | None = None) -> Resolved:
        parts = split_key(text)
        if parts is None:
            return Resolved("unknown")
        self.refresh()
        record = self.records.get(parts[0])
        if record is None and (self.source.cheap_version or time.monotonic() - self._read_at >= MISS_REFRESH_S):
            self.refresh(force=True)  # a key created since the last read (reread only if the file changed)
            record = self.records.get(parts[0])
        if record is None or not record.matches(parts[1]):
            return Resolved("unknown")
        return Resolved(record.status(time.time() if now is None else now), record)

    def env_names(self) -> Iterable[str]:
        return {k.provider_key_env for k in self.records.values()}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s` (or a number of seconds) as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise WrappedKeyError(f"--expires {text!r}: expected a duration such as 30d, 12h or 90m") from None
    if value <= 0:
        raise WrappedKeyError(f"--expires {text!r}: must be positive")
    return value
