"""The semantic cache: embedders, the LSH index, matching within a partition, the sweep."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from analysis.simulate.embedders import (
    CachedEmbedder,
    EmbedderError,
    HashingEmbedder,
    OpenAIEmbedder,
    WordLlamaEmbedder,
)
from analysis.simulate.semantic import SemanticIndex
from tests.simulate_helpers import contents_frame, decisions_by_id, requests_frame, run

PROMPTS = [
    "user: How do I cancel my credit card?",
    "user: how do I cancel my credit card",
    "user: What is the exchange rate for euros today?",
    "user: My transfer to Germany is still pending",
    "user: I want to cancel my credit card please",
]


def test_hashing_embedder_rows_do_not_depend_on_the_batch():
    embedder = HashingEmbedder()
    together = embedder.embed(PROMPTS)
    for i, text in enumerate(PROMPTS):
        assert np.array_equal(embedder.embed([text])[0], together[i])
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    similarity = together @ together.T
    assert similarity[0, 1] > 0.95  # same words, other case and punctuation
    assert similarity[0, 4] > 0.6 > similarity[0, 2]  # shared wording vs another topic
    assert not embedder.embed([""]).any()  # an empty text is the zero vector


def test_wordllama_is_the_default_embedder_offline_and_sees_meaning():
    from analysis.simulate.policy import parse_policy
    from analysis.simulate.simulator import build_engine

    engine = build_engine(parse_policy("[cache.semantic]\nthreshold = 0.9\n"))
    assert isinstance(engine.embedder, WordLlamaEmbedder) and engine.embedder.id.startswith("wordllama-")
    texts = ["I want to cancel my card", "Please stop my card", "What is the exchange rate for euros today?"]
    together = engine.embedder.embed(texts)
    for i, text in enumerate(texts):
        assert np.array_equal(engine.embedder.embed([text])[0], together[i])  # a row depends on its text only
    meaning = together @ together.T
    wording = HashingEmbedder().embed(texts) @ HashingEmbedder().embed(texts).T
    assert meaning[0, 1] > wording[0, 1] and meaning[0, 1] > meaning[0, 2]


def test_minilm_runs_offline_from_the_installed_wheel_and_sees_meaning(monkeypatch):
    import socket

    from analysis.simulate.embedders import MiniLMEmbedder

    def no_network(*args, **kwargs):
        raise AssertionError("the MiniLM embedder tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    embedder = MiniLMEmbedder()
    assert embedder.id.startswith("minilm-l6-v2-int8-")
    texts = ["I want to cancel my card", "Please stop my card", "What is the exchange rate for euros today?", ""]
    together = embedder.embed(texts)
    assert together.shape == (4, 384) and np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):
        assert np.array_equal(embedder.embed([text])[0], together[i])  # a row depends on its text only
    meaning = together @ together.T
    assert meaning[0, 1] > 0.5 > meaning[0, 2]
    long_text = "word " * 2_000  # past the model's 256 tokens: truncated, not an error
    assert embedder.embed([long_text]).shape == (1, 384)


def test_auto_names_minilm_when_the_semantic_extra_is_installed_and_the_result_says_so():
    from analysis.simulate.embedders import MiniLMEmbedder, minilm_installed, resolve_kind
    from analysis.simulate.policy import parse_policy
    from analysis.simulate.simulator import build_engine

    assert minilm_installed()  # the test extra installs the semantic extra
    assert resolve_kind("auto") == "minilm" and resolve_kind("wordllama") == "wordllama"
    policy = parse_policy('[cache.semantic]\nthreshold = 0.9\nembedder = "auto"\n')
    engine = build_engine(policy)
    assert isinstance(engine.embedder, MiniLMEmbedder)
    rows = [{"t": 0, "prompt_hash": "a"}, {"t": 10, "prompt_hash": "b"}]
    texts = {"r0": "user: I want to cancel my credit card", "r1": "user: please cancel my credit card"}
    result = run(
        '[cache.semantic]\nthreshold = 0.8\nembedder = "auto"\n', rows, contents_frame(requests_frame(rows), texts)
    )
    semantic = result.to_dict()["cache"]["semantic"]
    assert semantic["embedder"] == "minilm" and semantic["hits"] == 1
    assert result.to_dict()["parameters"]["embedder"].startswith("minilm-l6-v2-int8-")


def test_model_vectors_are_kept_in_the_data_directory_so_a_rerun_embeds_nothing(tmp_path):
    from analysis.simulate.embedders import make_embedder

    texts = [f"user: question {i} about my card" for i in range(50)]
    first = make_embedder("wordllama", url=None, model=None, api_key_env=None, data_dir=tmp_path)
    vectors = first.embed(texts)
    assert first.embedded == 50 and list((tmp_path / "embeddings").glob("*/part-*.parquet"))
    again = make_embedder("wordllama", url=None, model=None, api_key_env=None, data_dir=tmp_path)
    assert np.array_equal(again.embed(texts[::-1]), vectors[::-1]) and again.embedded == 0
    assert again.embed([*texts, "a new one"]).shape == (51, 256) and again.embedded == 1


def _index(bits=10, tables=16, bucket_size=64) -> SemanticIndex:
    return SemanticIndex(
        HashingEmbedder(), ttl_us=3_600_000_000, max_entries=1000, bits=bits, tables=tables, bucket_size=bucket_size
    )


def test_index_finds_the_nearest_stored_prompt_in_its_partition_only():
    index = _index()
    rows = [index.register(p) for p in PROMPTS]
    index.store(0, rows[0], available_at=0, source_id="first")
    index.store(0, rows[2], available_at=0, source_id="euros")
    index.store(1, rows[4], available_at=0, source_id="other-partition")
    similarity, _, entry = index.nearest(0, rows[1], now=10)
    assert entry == (0, 3_600_000_000, "first") and similarity > 0.95
    assert index.nearest(1, rows[3], now=10) is None or index.nearest(1, rows[3], now=10)[2][2] == "other-partition"
    assert index.nearest(0, rows[1], now=3_600_000_000) is None  # expired


def test_index_evicts_the_least_recently_used():
    index = SemanticIndex(HashingEmbedder(), ttl_us=10**12, max_entries=2, bits=10, tables=16, bucket_size=64)
    rows = [index.register(p) for p in PROMPTS]
    index.store(0, rows[0], 0, "a")
    index.store(0, rows[2], 0, "b")
    found = index.nearest(0, rows[1], 1)
    index.use(0, found[1])  # "a" served: most recently used
    assert index.nearest(0, rows[2], 1)[2][2] == "b"
    index.store(0, rows[3], 0, "c")  # evicts "b"
    found = index.nearest(0, rows[2], 1)
    assert found is None or found[2][2] != "b"
    assert index.nearest(0, rows[1], 1)[2][2] == "a"


def test_lsh_recall_on_near_duplicates():
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(3000)]
    base = [" ".join(rng.choice(words, size=12)) for _ in range(400)]
    near = [b + " " + rng.choice(words) for b in base]  # one word added
    index = _index()
    for i, text in enumerate(base):
        index.store(0, index.register(text), 0, f"b{i}")
    vectors = HashingEmbedder().embed(base + near)
    true_similarity = (vectors[:400] * vectors[400:]).sum(axis=1)
    found = 0
    for i, text in enumerate(near):
        result = index.nearest(0, index.register(text), 1)
        found += result is not None and result[2][2] == f"b{i}"
    assert true_similarity.min() > 0.85
    assert found / len(near) >= 0.95


def test_semantic_hit_above_the_threshold_within_scope_model_and_system_prompt():
    policy = """
[cache.semantic]
threshold = 0.9
ttl = "1h"
scope = "team"
sample_pairs = 5
sweep = [0.5, 0.99]
embedder = "hashing"
"""
    rows = [
        {"t": 0, "prompt_hash": "a"},
        {"t": 10, "prompt_hash": "b", "cost_usd": 0.02, "latency_ms": 700.0},  # paraphrase of r0: hit
        {"t": 20, "prompt_hash": "c"},  # another topic: miss
        {"t": 30, "prompt_hash": "d", "team": "support"},  # paraphrase, other team: miss
        {"t": 40, "prompt_hash": "e", "model": "gpt-4o-mini", "model_requested": "gpt-4o-mini"},  # other model: miss
        {"t": 50, "prompt_hash": "f"},  # same text, other system prompt: miss
        {"t": 60, "prompt_hash": "g", "temperature": 0.9},  # not cacheable
    ]
    requests = requests_frame(rows)
    texts = {
        "r0": PROMPTS[0],
        "r1": PROMPTS[1],
        "r2": PROMPTS[2],
        "r3": PROMPTS[1],
        "r4": PROMPTS[1],
        "r5": PROMPTS[1],
        "r6": PROMPTS[1],
    }
    contents = contents_frame(requests, texts, system={"r5": "You are a pirate."})
    result = run(policy, rows, contents)
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["semantic_cache"] for i in range(7)] == [
        "miss",
        "hit",
        "miss",
        "miss",
        "miss",
        "miss",
        "excluded",
    ]
    assert d["r1"]["cache_source_id"] == "r0" and d["r1"]["similarity"] > 0.95
    assert (
        d["r1"]["quality"] == "unverified" and d["r1"]["saving_cache"] == 0.02 and d["r1"]["latency_saved_ms"] == 700.0
    )
    assert d["r6"]["cache_excluded"] == "temperature"
    semantic = result.cache["semantic"]
    assert semantic["hits"] == 1 and semantic["quality"] == "unverified"
    [pair] = semantic["sample_pairs"]
    assert (pair["request_prompt"], pair["cached_prompt"]) == (PROMPTS[1], PROMPTS[0])
    assert pair["cached_answer"] == f"answer to {PROMPTS[0]}"
    sweep = {row["threshold"]: row for row in semantic["sweep"]}
    assert {k: sweep[0.9][k] for k in ("threshold", "hits", "hit_rate", "saving_usd", "estimated")} == {
        "threshold": 0.9,
        "hits": 1,
        "hit_rate": 1 / 7,
        "saving_usd": 0.02,
        "estimated": False,
    }
    assert sweep[0.99]["hits"] == 1 and sweep[0.99]["estimated"]  # the same words: similarity 1
    assert sweep[0.5]["hits"] == 1 and sweep[0.5]["estimated"]


LONG_ANSWER = (
    "To cancel your credit card, open the app, go to Cards, choose the card and tap Cancel card; "
    "the card stops working at once and any balance is paid back within five days."
)


def test_wrong_hits_are_estimated_from_answer_agreement_for_every_threshold():
    policy = """
[cache.semantic]
threshold = 0.9
sweep = [0.5, 0.9]
"""
    prompts = [
        ("user: How do I cancel my credit card?", LONG_ANSWER),
        ("user: how do I cancel my credit card", LONG_ANSWER.replace("five", "5")),  # agrees (similar text)
        ("user: What is the exchange rate for euros today?", "exchange_rate"),
        ("user: what is the exchange rate for euros today", "card_arrival"),  # a short label: differs
        ("user: Classify: my card has not arrived", '{"intent": "card_arrival"}'),
        ("user: classify: My card has not arrived!", '{ "intent":"card_arrival" }'),  # the same JSON
        ("user: how do I cancel my credit card?", None),  # no answer recorded: not compared
    ]
    rows = [{"t": 10 * i, "prompt_hash": f"p{i}", "cost_usd": 0.01 * (i + 1)} for i in range(len(prompts))]
    requests = requests_frame(rows)
    contents = contents_frame(requests, {f"r{i}": p for i, (p, _) in enumerate(prompts)})
    contents = contents.with_columns(
        contents["response_text"].scatter(list(range(len(prompts))), [a for _, a in prompts])
    )
    result = run(policy, rows, contents)
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["semantic_cache"] for i in (1, 3, 5, 6)] == ["hit"] * 4
    assert d["r6"]["cache_source_id"] == d["r6"]["semantic_source_id"] == "r0"
    assert d["r3"]["answer_agreement"] == 0.0 and d["r5"]["answer_agreement"] == 1.0
    assert 0.8 < d["r1"]["answer_agreement"] < 1.0 and d["r6"]["answer_agreement"] is None
    semantic = result.cache["semantic"]
    # 3 compared, 1 wrong: rate 1/3; the uncompared hit counts at that rate (1 + 1/3 -> 1).
    assert semantic["answers_compared"] == 3 and semantic["estimated_wrong_rate"] == pytest.approx(1 / 3)
    assert semantic["estimated_wrong_hits"] == 1
    saving = 0.02 + 0.04 + 0.06 + 0.07
    assert semantic["saving_usd"] == pytest.approx(saving)
    assert semantic["saving_net_usd"] == pytest.approx(saving - 0.04 - 0.07 / 3)
    assert "observed first" in semantic["wrong_hits_note"]
    for entry in semantic["sweep"]:
        assert entry["estimated_wrong_rate"] == pytest.approx(1 / 3) and entry["estimated_wrong_hits"] == 1
    pairs = semantic["sample_pairs"]
    assert len({(p["request_prompt"], p["cached_prompt"]) for p in pairs}) == len(pairs) == 4
    assert {p["request_id"]: p["answer_agreement"] for p in pairs}["r3"] == 0.0


def test_sample_pairs_are_a_random_sample_without_repeats():
    policy = "[cache.semantic]\nthreshold = 0.5\nsample_pairs = 3\n"
    # The same question asked 12 times: one distinct pair (question, question), shown once.
    rows = [{"t": 10 * i, "prompt_hash": f"p{i}"} for i in range(12)]
    requests = requests_frame(rows)
    result = run(policy, rows, contents_frame(requests, {f"r{i}": PROMPTS[0] for i in range(12)}))
    assert result.cache["semantic"]["hits"] == 11
    assert len(result.cache["semantic"]["sample_pairs"]) == 1
    # Distinct pairs: a sample of 3, not the 3 lowest similarities.
    texts = [f"user: question number {n} about my credit card being blocked" for n in range(30)]
    rows = [{"t": 10 * i, "prompt_hash": f"p{i}"} for i in range(30)]
    requests = requests_frame(rows)
    result = run(policy, rows, contents_frame(requests, {f"r{i}": texts[i] for i in range(30)}))
    hits = result.decisions.filter(result.decisions["disposition"] == "semantic_hit")
    pairs = result.cache["semantic"]["sample_pairs"]
    assert len(pairs) == 3 and len({p["request_id"] for p in pairs}) == 3
    lowest = set(hits.sort("similarity", "id").head(3)["id"].to_list())
    assert {p["request_id"] for p in pairs} != lowest


def test_requests_without_recorded_text_are_excluded():
    policy = "[cache.semantic]\nthreshold = 0.9\n"
    rows = [{"t": 0}, {"t": 1}]
    result = run(policy, rows, contents_frame(requests_frame(rows), {"r0": PROMPTS[0]}))
    d = decisions_by_id(result)
    assert d["r1"]["semantic_cache"] == "excluded" and d["r1"]["cache_excluded"] == "no_prompt_text"


class FakeEmbeddings(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible /v1/embeddings: a 3-d vector from letter counts."""

    calls: list[list[str]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/embeddings" and self.headers["Authorization"] == "Bearer sk-test"
        FakeEmbeddings.calls.append(body["input"])
        data = [
            {"index": i, "embedding": [text.count("a") + 1.0, text.count("e") + 1.0, text.count("o") + 1.0]}
            for i, text in enumerate(body["input"])
        ]
        payload = json.dumps({"object": "list", "data": data[::-1], "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def embeddings_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEmbeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeEmbeddings.calls = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_openai_embedder_vectors_are_kept_so_a_rerun_costs_nothing(embeddings_server, tmp_path):
    texts = ["banana", "apple", "banana"]
    first = CachedEmbedder(OpenAIEmbedder(embeddings_server, "embed-small", api_key="sk-test"), tmp_path)
    vectors = first.embed(texts)
    assert FakeEmbeddings.calls == [["banana", "apple"]]  # each text once
    expected = np.array([4.0, 1.0, 1.0]) / np.linalg.norm([4.0, 1.0, 1.0])  # 3 a, no e, no o
    assert np.allclose(vectors[0], expected) and np.array_equal(vectors[0], vectors[2])
    again = CachedEmbedder(OpenAIEmbedder(embeddings_server, "embed-small", api_key="sk-test"), tmp_path)
    assert np.array_equal(again.embed(texts), vectors)
    assert len(FakeEmbeddings.calls) == 1 and again.embedded == 0
    other_model = CachedEmbedder(OpenAIEmbedder(embeddings_server, "embed-large", api_key="sk-test"), tmp_path)
    other_model.embed(["apple"])
    assert len(FakeEmbeddings.calls) == 2  # vectors are kept per embedder


def test_semantic_cache_through_the_openai_embedder(embeddings_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_EMBEDDINGS_KEY", "sk-test")
    policy = f"""
[cache.semantic]
threshold = 0.99
embedder = "openai"
embedder_url = "{embeddings_server}"
embedder_model = "embed-small"
embedder_api_key_env = "TEST_EMBEDDINGS_KEY"
"""
    rows = [{"t": 0, "prompt_hash": "a"}, {"t": 10, "prompt_hash": "b"}, {"t": 20, "prompt_hash": "c"}]
    contents = contents_frame(requests_frame(rows), {"r0": "aaee", "r1": "eeaa", "r2": "ooo"})
    result = run(policy, rows, contents, data_dir=tmp_path)
    d = decisions_by_id(result)
    assert [d[f"r{i}"]["semantic_cache"] for i in range(3)] == ["miss", "hit", "miss"]
    assert result.parameters["embedder"].startswith("openai-embed-small@")
    assert list((tmp_path / "embeddings").glob("*/part-*.parquet"))


def test_unreachable_embeddings_endpoint_is_a_clear_error():
    embedder = OpenAIEmbedder("http://127.0.0.1:9/v1", "m", timeout=2)
    with pytest.raises(EmbedderError, match="cannot reach"):
        embedder.embed(["x"])
