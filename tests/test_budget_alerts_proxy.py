"""Budget alerts live: the real openai SDK -> `llm-shadow proxy --policy P` (observe mode) ->
the fake provider, and a webhook receiver of the test's own on loopback.

Every call costs the same (the fake provider reports the usage we ask for), and the budget's
limit is ten calls' cost, so by hand: the 80% alert fires on the 8th call of the team, the 95%
alert on the 10th (9 calls are 90%), each once, whatever follows. `simulate` over what the
proxy recorded lists the same two alerts. With Redis state, two proxies take turns and the
alerts still fire once.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from typer.testing import CliRunner

from analysis.parsers.exchange import Usage
from analysis.pricing.table import PriceTable
from analysis.store.datadir import Store
from cli import app
from tests.conftest import RunningProxy, llm_shadow_proxy_command, wait_for
from tests.fake_provider import FakeProvider
from tests.sdk_support import API_KEY

USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
SERVED = "gpt-4o-mini-2024-07-18"  # the model the fake provider says answered gpt-4o-mini (priced)
HOOK_ENV = "LLM_SHADOW_TEST_ALERT_HOOK"


class Receiver:
    """A webhook endpoint on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers["content-length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def call_cost() -> float:
    cost = PriceTable.load(None).cost(provider="openai", model=SERVED, usage=Usage(1000, 100)).cost_usd
    assert cost and cost > 0
    return cost


def write_policy(path: Path, limit: float) -> Path:
    path.write_text(
        "[[budget]]\n"
        'name = "team-day"\n'
        'scope = "team"\n'
        'window = "day"\n'
        f"limit_usd = {limit!r}\n"
        "alert_at = [0.8, 0.95]\n"
        f'alert_webhook_env = "{HOOK_ENV}"\n'
    )
    return path


def send(url: str, team: str, calls: int) -> None:
    client = openai.OpenAI(
        base_url=f"{url}/v1",
        api_key=API_KEY,
        max_retries=0,
        default_headers={"x-shadow-team": team, "x-shadow-feature": "faq", "x-fake-usage": json.dumps(USAGE)},
    )
    for _ in range(calls):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])


def recorded(data_dir: Path, n: int) -> list[dict]:
    store = Store(data_dir)
    rows = wait_for(lambda: (f := store.requests_frame().to_dicts()) and len(f) >= n and f)
    assert rows and len(rows) == n
    return sorted(rows, key=lambda r: (r["ts"], r["id"]))


def test_alerts_fire_once_per_share_with_the_figures_and_simulate_lists_them(tmp_path, receiver):
    cost = call_cost()
    policy = write_policy(tmp_path / "policy.toml", 10 * cost)
    data_dir = tmp_path / "data"
    with FakeProvider() as provider:
        proxy = RunningProxy(
            llm_shadow_proxy_command(["--upstream", f"{provider.url}@0", "--policy", str(policy)], data_dir),
            **{HOOK_ENV: receiver.url},
        )
        try:
            send(proxy.url, "search", 12)
            send(proxy.url, "ads", 3)  # its own window: 30%, no alert
            rows = recorded(data_dir, 15)
            assert wait_for(lambda: len(receiver.bodies) >= 2), "".join(proxy.output[-20:])
            wait_for(lambda: len(receiver.bodies) > 2, timeout=1.0)  # nothing more comes
            status = wait_for(lambda: "Budget alerts: 2 sent, 0 failed" in (s := stats_output(data_dir)) and s)
            assert status, stats_output(data_dir)
        finally:
            proxy.stop()
    assert "alert: budget 'team-day' (team 'search'" in "".join(proxy.output)

    search = [r for r in rows if r["team"] == "search"]
    assert all(r["cost_usd"] == pytest.approx(cost) for r in rows)
    assert len(receiver.bodies) == 2
    first, second = (body["llm_shadow"] for body in receiver.bodies)
    assert (first["share"], first["request_id"]) == (0.8, search[7]["id"])
    assert (second["share"], second["request_id"]) == (0.95, search[9]["id"])
    assert first["spend_usd"] == pytest.approx(8 * cost) and second["spend_usd"] == pytest.approx(10 * cost)
    assert first["limit_usd"] == pytest.approx(10 * cost) and first["spent_share"] == pytest.approx(0.8)
    assert (first["budget"], first["scope"], first["scope_value"], first["window"]) == (
        "team-day",
        "team",
        "search",
        "day",
    )
    assert first["window_start"] == search[7]["ts"].strftime("%Y-%m-%dT00:00:00+00:00")
    assert first["top_models"] == [{"model": "gpt-4o-mini", "spend_usd": pytest.approx(8 * cost)}]
    assert first["top_features"] == [{"feature": "faq", "spend_usd": pytest.approx(8 * cost)}]
    # A Slack incoming webhook's shape: a text, and blocks with the figures.
    assert receiver.bodies[0]["text"].startswith("llm-shadow: budget 'team-day' (team 'search', day ")
    assert "reached 80% of its limit" in receiver.bodies[0]["text"]
    assert receiver.bodies[0]["blocks"][1]["fields"][0]["text"].startswith("*Spend*\n")
    # Observe mode decided nothing.
    assert Store(data_dir).decisions_frame().height == 0
    assert {r["outcome"] for r in rows} == {"ok"}

    simulated = CliRunner().invoke(
        app, ["simulate", "--policy", str(policy), "--data", str(data_dir), "--format", "json", "--no-save"]
    )
    assert simulated.exit_code == 0, simulated.output
    alerts = json.loads(simulated.output)["budgets"][0]["alerts"]
    live = [(b["llm_shadow"]["request_id"], b["llm_shadow"]["share"]) for b in receiver.bodies]
    assert [(a["request_id"], a["share"]) for a in alerts] == live
    for sim, body in zip(alerts, receiver.bodies, strict=True):
        sent = body["llm_shadow"]
        assert sim["spend_usd"] == pytest.approx(sent["spend_usd"])
        assert sim["fired_at"] == sent["fired_at"] and sim["window_start"] == sent["window_start"]
        assert [m["model"] for m in sim["top_models"]] == [m["model"] for m in sent["top_models"]]

    table = CliRunner().invoke(app, ["simulate", "--policy", str(policy), "--data", str(data_dir), "--no-save"])
    assert table.exit_code == 0, table.output
    assert "alerts at 80%, 95% of its limit: 2 would have fired" in " ".join(table.output.split())

    for fmt, out in (("md", tmp_path / "report.md"), ("html", tmp_path / "report.html")):
        command = ["report", "--policy", str(policy), "--data", str(data_dir), "--format", fmt, "--out", str(out)]
        written = CliRunner().invoke(app, command)
        assert written.exit_code == 0, written.output
        text = out.read_text()
        assert "Alerts at 80.0%, 95.0%" in text and search[7]["id"] in text and search[9]["id"] in text


def stats_output(data_dir: Path) -> str:
    result = CliRunner().invoke(app, ["stats", "--data", str(data_dir)])
    return result.output


def test_two_proxies_sharing_redis_fire_each_alert_once(tmp_path, receiver, redis_server):
    cost = call_cost()
    policy = write_policy(tmp_path / "policy.toml", 10 * cost)
    data_dir = tmp_path / "data"
    with FakeProvider() as provider:
        args = ["--upstream", f"{provider.url}@0", "--policy", str(policy), "--state", redis_server.url]
        proxies = [RunningProxy(llm_shadow_proxy_command(args, data_dir), **{HOOK_ENV: receiver.url}) for _ in range(2)]
        try:
            for i in range(12):  # the two take turns: each sees the other's spend in Redis
                send(proxies[i % 2].url, "search", 1)
            rows = recorded(data_dir, 12)
            assert wait_for(lambda: len(receiver.bodies) >= 2)
            wait_for(lambda: len(receiver.bodies) > 2, timeout=1.0)
        finally:
            for proxy in proxies:
                proxy.stop()
    shares = sorted((b["llm_shadow"]["share"], b["llm_shadow"]["request_id"]) for b in receiver.bodies)
    assert shares == [(0.8, rows[7]["id"]), (0.95, rows[9]["id"])]


def test_observe_mode_wants_a_policy_that_alerts(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[cache.exact]\nname = "exact"\n')
    command = ["proxy", "--upstream", "http://127.0.0.1:9", "--policy", str(policy), "--data", str(tmp_path / "d")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "in observe mode a policy only sends budget alerts" in " ".join(result.output.split())
    write_policy(policy, 1.0)
    result = CliRunner().invoke(app, command, env={HOOK_ENV: ""})
    assert result.exit_code == 1
    assert f"the environment variable {HOOK_ENV} is not set" in " ".join(result.output.split())
