"""The `llm-shadow` command: observe LLM traffic, simulate policies, report savings."""

import os
import re
import shlex
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from analysis.recording.settings import RecorderSettings
from analysis.recording.status import alert_counts, late_statuses, problem_summary, read_statuses
from analysis.store import DEFAULT_DATA_DIR, GROUP_ALIASES, GROUP_LABELS, StoreError
from reports.format import json_ready, usd
from reports.realised_view import print_realised
from reports.tables import FORMATS, print_frame, shown

if TYPE_CHECKING:
    from analysis.store.datadir import Store

# polars, duckdb, pyarrow and plotly are imported inside the commands that use them, so that
# `llm-shadow --help` and argument errors answer at once.

app = typer.Typer(
    help="Observe LLM API traffic, see what it costs, and simulate what policies would save.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped output gets a wide console rather than rich's 80 columns, so tables are not cut short.
# No emoji codes: a CA fingerprint (`12:AB:CD`) or a stored value (`:ab:`) is printed as it is.
console = Console(emoji=False) if Console().is_terminal else Console(width=200, emoji=False)
err_console = Console(stderr=True, emoji=False)

DataDir = Annotated[
    Path,
    typer.Option("--data", envvar="LLM_SHADOW_DATA", help="Data directory (env LLM_SHADOW_DATA).", show_default=True),
]
Format = Annotated[str, typer.Option("--format", help="Output format: table, json or csv.")]
TableOrJson = Annotated[str, typer.Option("--format", help="Output format: table or json.")]
ConfdirOption = Annotated[
    Path,
    typer.Option(
        "--confdir",
        envvar="LLM_SHADOW_CONFDIR",
        help="mitmproxy configuration directory holding the interception CA (env LLM_SHADOW_CONFDIR).",
    ),
]
DEFAULT_CONFDIR = Path("~/.mitmproxy")
StateOption = Annotated[
    str | None,
    typer.Option(
        "--state",
        envvar="LLM_SHADOW_STATE",
        help="Where shared state lives: memory (this process; wrapped keys in the data directory) "
        "or redis://HOST:PORT/DB (env LLM_SHADOW_STATE).",
        show_default="memory",
    ),
]


def _since(value: str) -> datetime | None:
    return parse_date(value, "--from")


def _until(value: str) -> datetime | None:
    return parse_date(value, "--to")


# --from/--to: one pair of names in every command (`since`/`until` in the code and the queries).
Since = Annotated[
    datetime | None,
    typer.Option("--from", parser=_since, metavar="YYYY-MM-DD", help="First day (UTC), YYYY-MM-DD."),
]
Until = Annotated[
    datetime | None,
    typer.Option("--to", parser=_until, metavar="YYYY-MM-DD", help="Day after the last (UTC), YYYY-MM-DD."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error on stderr; return the Exit to raise.

    The message is printed as text, never read as rich markup (paths and policy keys such as
    `[[routing]]` contain brackets)."""
    err_console.print(f"[bold red]Error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def open_store(data: Path, create: bool = False, read_only: bool = False) -> "Store":
    """The data directory; `read_only` for commands that only read it (nothing is created or
    migrated: a read-only mount works)."""
    from analysis.store.datadir import Store

    try:
        return Store(data, create=create, read_only=read_only)
    except StoreError as e:
        hint = " (record some traffic first: llm-shadow proxy, or llm-shadow import FILE)" if not data.exists() else ""
        raise fail(f"{e}{hint}") from e


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise fail(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def parse_date(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise fail(f"{option}: {value!r} is not a date (use YYYY-MM-DD or an ISO timestamp)") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_age(value: str, option: str = "--older-than", seconds: bool = False) -> timedelta:
    """'14d', '12h', '30m', '2w' (and '45s' when `seconds`) -> timedelta."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", value)
    if not m or (m[2] == "s" and not seconds):
        examples = "30s, 10m, 1h" if seconds else "14d, 12h, 30m, 2w"
        raise fail(f"{option}: {value!r} is not an age (examples: {examples})")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m[2]]
    return timedelta(**{unit: int(m[1])})


# --- proxy ---------------------------------------------------------------------------------------


def mitmdump_args(
    upstream: list[str],
    port: int,
    listen_host: str,
    forward: bool,
    transparent: bool = False,
    local: str | None = None,
    confdir: Path | None = None,
) -> list[str]:
    """The mitmdump command line `llm-shadow proxy` runs (in-process, recorder built in): where
    to listen and in which mode. Typed options are set directly (see `proxy_options`)."""
    args = ["--listen-host", listen_host]
    chosen = [
        name
        for name, on in (
            ("--upstream", bool(upstream)),
            ("--forward", forward),
            ("--transparent", transparent),
            ("--local", local is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise fail(f"{' and '.join(chosen)} are different ways to capture; pick one")
    if forward:
        args += ["--mode", f"regular@{port}"]
    elif transparent:
        args += ["--mode", f"transparent@{port}"]
    elif local is not None:
        args += ["--mode", f"local:{local}" if local else "local"]
    else:
        if not upstream:
            raise fail(
                "say how clients reach the proxy: --upstream https://api.openai.com (reverse mode), "
                "--forward (HTTPS_PROXY), --transparent (a redirect rule) or --local NAME"
            )
        for i, spec in enumerate(upstream):
            url, _, upstream_port = spec.partition("@")
            if not re.fullmatch(r"https?://[^/\s]+/?", url):
                raise fail(f"--upstream {spec!r}: expected a URL like https://api.openai.com[@PORT]")
            if upstream_port and not upstream_port.isdigit():
                raise fail(f"--upstream {spec!r}: the port after @ must be a number")
            args += ["--mode", f"reverse:{url.rstrip('/')}@{upstream_port or port + i}"]
        # Connect upstream once the request is read, so a refused connection answers the
        # client 502 and gives a connect_error row (eagerly, the client is just hung up on).
        args += ["--set", "connection_strategy=lazy"]
    if confdir is not None:  # on the command line: mitmproxy reads its config.yaml from there
        args += ["--set", f"confdir={confdir}"]
    return args


def check_listen_ports(args: list[str], listen_host: str) -> None:
    """Stop with one line when a port the proxy would listen on is out of range or taken (before
    mitmproxy starts, whose own messages take two lines and its own wording)."""
    import errno
    import socket

    modes = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--mode"]
    for mode in modes:
        m = re.search(r"@(\d+)$", mode)
        if m is None:
            continue
        port = int(m[1])
        if port > 65535:
            raise fail(f"port {port}: a port is a number from 1 to 65535 (0: any free port)")
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers bind
            try:
                probe.bind((listen_host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise fail(
                        f"port {port} on {listen_host} is already in use (another proxy?): choose another with --port"
                    ) from e
                if e.errno == errno.EACCES:
                    raise fail(f"port {port}: not allowed to listen on it (ports below 1024 need root)") from e
                return  # something mitmproxy will say better (an address this machine does not have)


def proxy_options(
    settings: RecorderSettings, intercept_hosts: list[str], intercept_all: bool, timeout: int = 600
) -> dict:
    """The typed mitmproxy options `llm-shadow proxy` sets: the recorder's settings, TLS
    interception, the idle timeout, how much mitmproxy itself prints (its warnings only:
    `-v` is the recorder's line per call, `settings.log_calls`), and no onboarding app: a call
    to `mitm.it` passes through like any other (`llm-shadow ca` makes the CA), and mitmproxy does not
    read every request's Host to look for it."""
    from addons.recorder import options_from_settings

    return {
        **options_from_settings(settings),
        "shadow_intercept_hosts": list(intercept_hosts),
        "shadow_intercept_all": intercept_all,
        "tcp_timeout": timeout,
        "flow_detail": 0,
        "termlog_verbosity": "warn",
        "onboarding": False,
    }


@app.command()
def proxy(
    upstream: Annotated[
        list[str],
        typer.Option(
            "--upstream",
            help=(
                "Reverse mode: the provider URL to forward to, optionally @PORT to listen on (repeatable: one port "
                "per upstream)."
            ),
        ),
    ] = [],  # noqa: B006
    forward: Annotated[
        bool, typer.Option("--forward", help="Forward mode: clients set HTTPS_PROXY and trust the llm-shadow CA.")
    ] = False,
    transparent: Annotated[
        bool,
        typer.Option(
            "--transparent",
            help="Transparent mode: an iptables/nftables rule redirects clients' traffic here (docs/transparent.md).",
        ),
    ] = False,
    local: Annotated[
        str | None,
        typer.Option(
            "--local",
            help=(
                "Local capture mode: capture these processes by name (mitmproxy spec: curl, python,node, !ssh). "
                "Linux 6.8+ with cgroup v2 and sudo."
            ),
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to listen on (the first upstream's, when it names none).")] = 8080,
    listen_host: Annotated[
        str,
        typer.Option(
            "--listen-host",
            help="Address to listen on (0.0.0.0 when a gateway redirects other machines' traffic here).",
        ),
    ] = "127.0.0.1",
    intercept_host: Annotated[
        list[str],
        typer.Option(
            "--intercept-host",
            help="Also decrypt and record this host (an LLM gateway); *.domain for a whole domain. Repeatable.",
        ),
    ] = [],  # noqa: B006
    intercept_all: Annotated[
        bool, typer.Option("--intercept-all", help="Decrypt TLS to every host, not only LLM hosts.")
    ] = False,
    confdir: ConfdirOption = DEFAULT_CONFDIR,
    data: DataDir = Path(DEFAULT_DATA_DIR),
    content: Annotated[
        bool, typer.Option("--content/--no-content", help="Keep request messages and response text.")
    ] = True,
    flush_interval: Annotated[
        float, typer.Option(help="Seconds between writes; a crash loses at most this much.")
    ] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print one line per call.")] = False,
    timeout: Annotated[
        int,
        typer.Option(
            help="Seconds a connection may stay idle (no byte either way) before the proxy closes it; "
            "the call is recorded with outcome timeout.",
            min=1,
        ),
    ] = 600,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Policy file (TOML) deciding every call in shadow or enforce mode; in observe mode, its budget "
            "alerts only.",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="observe: record only (with --policy: send its budget alerts); shadow: decide and log every call "
            "in `decisions`, change nothing; enforce: decisions act.",
        ),
    ] = "observe",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Start enforce mode although less traffic was recorded than the policy's observe_for."
        ),
    ] = False,
    cache_bytes: Annotated[
        int,
        typer.Option(
            "--cache-bytes", help="Enforce mode: bytes of upstream answers each cache (exact, semantic) keeps (LRU)."
        ),
    ] = 256 * 1024 * 1024,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics at /metrics on this port (0: off)."
        ),
    ] = 0,
    otlp_endpoint: Annotated[
        str,
        typer.Option(
            "--otlp-endpoint",
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="Send every call as an OpenTelemetry GenAI span and metrics to this OTLP/HTTP collector, "
            "e.g. http://localhost:4318 (env OTEL_EXPORTER_OTLP_ENDPOINT).",
        ),
    ] = "",
    otlp_content: Annotated[
        bool,
        typer.Option("--otlp-content", help="Include prompt and answer text in the OpenTelemetry spans (opt-in)."),
    ] = False,
    state: StateOption = None,
):
    """Run the recording proxy in front of LLM providers (reverse, forward, transparent or local mode)."""
    from addons.ca import ensure_ca
    from addons.proxy import run_proxy
    from addons.tls_passthrough import parse_host_patterns
    from analysis.capture_setup.doctor import local_capture_unavailable_reason

    if not flush_interval > 0:
        raise fail("--flush-interval must be positive")
    if not 0 <= port <= 65535:
        raise fail(f"--port {port}: a port is a number from 1 to 65535 (0: any free port)")
    try:
        settings = RecorderSettings(
            data=data,
            content=content,
            flush_interval=flush_interval,
            log_calls=verbose,
            metrics_port=metrics_port,
            otlp_endpoint=otlp_endpoint,
            otlp_content=otlp_content,
        )
    except ValueError as e:
        raise fail(f"--{str(e).replace('_', '-', 1)}") from e
    try:
        parse_host_patterns(intercept_host)
    except ValueError as e:
        raise fail(f"--intercept-host: {e}") from e
    args = mitmdump_args(upstream, port, listen_host, forward, transparent, local, confdir.expanduser())
    check_listen_ports(args, listen_host)
    args += policy_args(policy, mode, force, data, cache_bytes)
    args += state_args(state)
    if local is not None and (reason := local_capture_unavailable_reason()):
        raise fail(
            f"--local cannot work here: {reason}. Use --transparent with a redirect rule instead (docs/transparent.md)."
        )
    open_store(data, create=True)
    if not upstream:  # modes that decrypt: the CA must exist, with its key kept private
        try:
            ensure_ca(confdir.expanduser())
        except OSError as e:
            raise fail(f"cannot create the CA in {confdir}: {e.strerror}") from e
    failure = run_proxy(args, proxy_options(settings, intercept_host, intercept_all, timeout))
    if failure:
        raise fail(failure)
    _proxy_stopped.append(True)  # see main: every addon is done, rows flushed, status marked stopped


def state_args(state: str | None) -> list[str]:
    """The recorder option for --state, once the value is known to name a backend."""
    from analysis.shared_state.backend import BadStateURL, open_backend

    if state is None:
        return []
    try:
        open_backend(state)
    except BadStateURL as e:
        raise fail(str(e)) from e
    return ["--set", f"shadow_state={state}"]


def policy_args(policy: Path | None, mode: str, force: bool, data: Path, cache_bytes: int) -> list[str]:
    """The recorder options for `--policy`/`--mode`, once the policy is known to load: a policy
    that does not load never starts shadow or enforce mode. Enforce mode also wants the
    policy's `observe_for` of recorded traffic first (or --force)."""
    from analysis.enforce.live import MODES, LivePolicy
    from analysis.pricing.files import PriceFileError
    from analysis.pricing.table import PriceTable
    from analysis.simulate.policy import PolicyError

    if mode not in MODES:
        raise fail(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if cache_bytes <= 0:
        raise fail("--cache-bytes must be positive")
    if mode == "observe" and policy is None:
        return []
    if policy is None:
        raise fail(f"--mode {mode} needs --policy FILE")
    loaded = _read_policy(policy)
    if mode == "observe" and not any(b.alert_at for b in loaded.budgets):
        raise fail(
            f"{policy}: in observe mode a policy only sends budget alerts, and this one has no budget with "
            "alert_at; use --mode shadow or --mode enforce to decide calls"
        )
    store = open_store(data, create=True)
    try:
        LivePolicy(loaded, mode, PriceTable.load(store.data_dir))
    except (PolicyError, PriceFileError) as e:
        raise fail(str(e)) from e
    if mode == "enforce" and not force:
        observed = observed_seconds(store)
        if observed < loaded.observe_for_seconds:
            raise fail(
                f"{data} holds {observed / 86400:.1f} days of recorded traffic; the policy asks for "
                f"observe_for = {loaded.observe_for_seconds / 86400:g} days before enforcing. Run "
                "--mode shadow meanwhile, or start anyway with --force"
            )
    return [
        *("--set", f"shadow_policy={policy.resolve()}"),
        *("--set", f"shadow_mode={mode}"),
        *("--set", f"shadow_cache_bytes={cache_bytes}"),
    ]


def observed_seconds(store: "Store") -> float:
    """Seconds between the first and the last recorded call (0 with none)."""
    row = store.connect().execute("SELECT epoch(max(ts)) - epoch(min(ts)) FROM requests").fetchone()
    return float(row[0] or 0.0) if row else 0.0


# --- import --------------------------------------------------------------------------------------


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="mitmproxy flow files or HAR files.")],
    data: DataDir = Path(DEFAULT_DATA_DIR),
    content: Annotated[
        bool, typer.Option("--content/--no-content", help="Keep request messages and response text.")
    ] = True,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes recording in parallel (default: one per core for large imports)."),
    ] = None,
):
    """Record the LLM calls in mitmproxy flow files or HAR files, through the same recorder."""
    from addons.importer import ImportFailed, read_sources

    try:
        sources = read_sources(files)
    except ImportFailed as e:
        raise fail(str(e)) from e
    result = record_sources(sources, data, content, "importing", workers)
    console.print(
        f"Read {result.flows:,} flows; recorded {result.recorded:,} LLM calls into {data}; "
        f"{result.already_present:,} were already present.",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    if result.problems.counts:
        err_console.print(f"[yellow]Problems:[/] {result.problems.summary()}", highlight=False)


def record_sources(sources, data: Path, content: bool, description: str, workers: int | None = None):
    """Record framed capture files (addons.import_sources) into `data` with a progress bar."""
    from addons.importer import ImportFailed, import_files
    from reports.progress import counting_progress

    open_store(data, create=True)
    with counting_progress(description, "flows", err_console) as progress:
        task = progress.add_task(description, total=sum(len(s) for s in sources))
        try:
            # No queue limit: an import reads as fast as it records, and must not drop calls.
            settings = RecorderSettings(data=data, content=content, queue_limit=0)
            return import_files(sources, settings, on_progress=lambda n: progress.advance(task, n), workers=workers)
        except ImportFailed as e:
            raise fail(str(e)) from e


# --- stats, sql ----------------------------------------------------------------------------------


def realised_view(data: Path, policy_path: Path | None, since: datetime | None, until: datetime | None):
    """What shadow and enforce mode did in the range, beside the simulation of the same calls when
    a policy file is given (analysis.enforce.realised); None when no policy ran live there."""
    from analysis.enforce.realised import period, realised
    from analysis.simulate.baseline import read_baseline
    from analysis.simulate.pricer import Pricer

    store = open_store(data, read_only=True)
    logged = store.decisions_frame(since, until)
    if logged.height == 0:
        return None
    start, end = period(logged)
    baseline = read_baseline(store, start, end, Pricer(load_prices(data)))
    simulation = None
    if policy_path is not None:
        simulation = _simulate_one(policy_path, data, start, end, show_progress=err_console.is_terminal)
    return realised(baseline, logged, simulation)


@app.command()
def stats(
    by: Annotated[str, typer.Option(help=f"Group by: {', '.join(GROUP_LABELS)}.")] = "model",
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Policy file that ran in shadow or enforce mode: adds its simulation of the same calls to the "
            "realised view."
        ),
    ] = None,
    since: Since = None,
    until: Until = None,
    fmt: Format = "table",
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Spend, tokens and latency of recorded calls, grouped; what policies realised live."""
    check_format(fmt)
    from analysis.store import stats as stats_queries

    by = GROUP_ALIASES.get(by, by)
    if by not in GROUP_LABELS:
        raise fail(f"--by {by!r}: choose one of {', '.join(GROUP_LABELS)}")
    if policy is not None and not policy.is_file():
        raise fail(f"--policy {policy}: no such file")
    if policy is not None and fmt != "table":
        raise fail("--policy adds the realised view to the table; with --format json or csv it has no place")
    store = open_store(data, read_only=True)
    with store.connect() as con:
        frame = stats_queries.grouped(con, by, since, until)
        total = stats_queries.totals(con, since, until)
        decided = stats_queries.decisions_by_policy(con, since, until)
    view = realised_view(data, policy, since, until) if fmt == "table" else None
    print_frame(frame, fmt, console, title=f"LLM calls by {by}")
    if fmt == "table" and decided.height:
        print_frame(decided, fmt, console, title="Policy decisions (shadow: would have; enforce: did)")
    if view is not None:
        print_realised(view, console)
    if fmt == "table":
        console.print(
            f"{total.calls:,} calls, {usd(total.cost_usd)}, {total.input_tokens:,} input and "
            f"{total.output_tokens:,} output tokens",
            highlight=False,
        )
    if total.unpriced_calls:
        err_console.print(
            f"[bold yellow]Warning:[/] {total.unpriced_calls:,} calls have no price (cost_usd is NULL, "
            "not $0): see llm-shadow prices missing",
            highlight=False,
        )
    if total.price_differ_calls or total.price_one_sided_calls:
        err_console.print(
            f"[bold yellow]Warning:[/] the second price table disagrees on {total.price_differ_calls:,} calls "
            f"(by more than 1%) and prices only one side of {total.price_one_sided_calls:,}: "
            "see llm-shadow prices compare",
            highlight=False,
        )
    if total.price_unchecked_calls:
        err_console.print(
            f"Note: {total.price_unchecked_calls:,} costs were recorded before the second price table checked "
            "them: llm-shadow reprice checks them.",
            highlight=False,
        )
    if alerts := alert_counts(data):
        err_console.print(
            f"Budget alerts: {alerts.get('sent', 0):,} sent, {alerts.get('failed', 0):,} failed, "
            f"{alerts.get('dropped', 0):,} dropped (queue full)",
            highlight=False,
        )
    statuses = read_statuses(data)
    if problems := problem_summary(statuses):
        err_console.print(
            f"[bold yellow]Warning:[/] recording had problems: {escape(problems)} (see {escape(str(data / 'status'))})",
            highlight=False,
        )
    for status, age in late_statuses(statuses):
        err_console.print(
            f"[bold yellow]Warning:[/] recorder {escape(status.instance)}: status not updated for {age:,.0f} s "
            f"and not marked stopped: the proxy was killed, or cannot write {escape(str(status.path))} "
            "(a full disk?); its counts may be out of date",
            highlight=False,
        )
    if total.estimated_calls and fmt == "table":
        err_console.print(
            f"Note: {total.estimated_calls:,} calls have estimated tokens (usage_source = 'estimated').",
            highlight=False,
        )


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the relations requests, contents and decisions.")],
    fmt: Format = "table",
    data: DataDir = Path(DEFAULT_DATA_DIR),
    allow_write: Annotated[
        bool,
        typer.Option(
            "--allow-write",
            help=(
                "Allow statements that write (COPY ... TO a file, CREATE, ATTACH, INSTALL) and files outside "
                "the data directory."
            ),
        ),
    ] = False,
):
    """Run a read-only DuckDB SQL query over the recorded calls (relations: requests, contents, decisions)."""
    import duckdb

    from analysis.store.datadir import query_frame, read_only_violation

    check_format(fmt)
    if not query.strip():
        raise fail('no query given (example: llm-shadow sql "SELECT count(*) FROM requests")')
    if not allow_write and (violation := read_only_violation(query)):
        raise fail(violation)
    store = open_store(data, read_only=True)
    with store.connect(sandboxed=not allow_write) as con:
        try:
            frame = query_frame(con, query)
        except duckdb.Error as e:
            raise fail(str(e).splitlines()[0]) from e
    print_frame(frame, fmt, console)


# --- purge ---------------------------------------------------------------------------------------


@app.command()
def purge(
    older_than: Annotated[str, typer.Option("--older-than", help="Age of what to delete: 14d, 12h, 2w.")],
    requests: Annotated[
        bool, typer.Option("--requests", help="Also delete the calls themselves, not only their content.")
    ] = False,
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Delete stored content (messages, response text) older than an age."""
    cutoff = datetime.now(UTC) - parse_age(older_than)
    store = open_store(data)
    deleted = store.purge_contents(cutoff)
    message = f"Deleted the content of {deleted:,} calls before {cutoff:%Y-%m-%d %H:%M} UTC"
    if requests:
        message += f", and {store.purge_requests(cutoff):,} calls"
    console.print(message + ".", highlight=False)


@app.command()
def compact(
    quiet_for: Annotated[
        str,
        typer.Option(
            "--quiet-for",
            help="Merge a recorder's segments once none of its files changed for this long (30s, 10m, 1h): "
            "a running recorder merges its own. Lower it only once every recorder of the directory has stopped.",
        ),
    ] = "10m",
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Merge the segments stopped recorders left behind, and delete superseded ones."""
    from analysis.store.datadir import all_segments, live_segments

    quiet_seconds = parse_age(quiet_for, "--quiet-for", seconds=True).total_seconds()
    store = open_store(data)
    directories = (store.records_dir, store.contents_dir)
    before = sum(len(live_segments(d)) for d in directories)
    merged, deleted = store.compact(quiet_seconds)
    after = sum(len(live_segments(d)) for d in directories)
    waiting = sum(len(all_segments(d)) for d in directories) - after
    console.print(
        f"Live segments: {before:,} before, {after:,} now. Deleted {deleted:,} superseded files; "
        f"{waiting:,} wait until no query can still be reading them (a later compact "
        "deletes them).",
        highlight=False,
    )
    if not merged and (recent := store.unquiet_instances(quiet_seconds)):
        latest = min(recent.values())
        console.print(
            f"Merged nothing from {len(recent):,} recorder(s) whose files changed {latest:,.0f} s ago or less: "
            f"compact waits until a recorder's files have not changed for {quiet_for} (a running recorder merges "
            "its own). Once every recorder of this directory has stopped, --quiet-for 0s merges them now.",
            highlight=False,
        )


# --- prices commands -----------------------------------------------------------------------------

prices_app = typer.Typer(
    help="The price table: show a model's prices, import prices, list unpriced models.", no_args_is_help=True
)
app.add_typer(prices_app, name="prices")


def load_pricing(data: Path):
    """Both price tables, the chosen one primary (analysis.pricing.check)."""
    from analysis.pricing.check import Pricing
    from analysis.pricing.files import PriceFileError

    try:
        return Pricing.load(data)
    except PriceFileError as e:
        raise fail(str(e)) from e


def load_prices(data: Path):
    from analysis.pricing.files import PriceFileError
    from analysis.pricing.table import PriceTable

    try:
        return PriceTable.load(data)
    except PriceFileError as e:
        raise fail(str(e)) from e


@prices_app.command("show")
def prices_show(
    model: Annotated[
        str, typer.Argument(help="Model name as you write it (gpt-4o, anthropic/claude-sonnet-4.5, ...).")
    ],
    provider: Annotated[
        str | None, typer.Option(help="Provider selling it: openai, azure, anthropic, gemini, openrouter, ...")
    ] = None,
    fmt: TableOrJson = "table",
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Show the price llm-shadow uses for a model, per 1M tokens."""
    import json

    from analysis.pricing.rates import rate_rows
    from reports.price_tables import DERIVED_NOTE, rates_document, rates_table

    if fmt not in ("table", "json"):
        raise fail(f"unknown format {fmt!r}; choose table or json")
    table = load_prices(data)
    price = table.resolve(model, provider)
    if price is None:
        where = f" at provider {provider}" if provider else ""
        raise fail(
            f"no price for {model!r}{where} in price table {table.version} "
            "(add one with: llm-shadow prices import FILE)"
        )
    rows = rate_rows(price)
    if fmt == "json":
        console.print_json(json.dumps(json_ready(rates_document(model, provider, price, table.version, rows))))
        return
    console.print(rates_table(model, price.label, rows))
    console.print(f"from {price.source}; price version {table.version}; mode {price.mode}", highlight=False)
    console.print(DERIVED_NOTE, highlight=False)


@prices_app.command("import")
def prices_import(
    file: Annotated[Path, typer.Argument(help="A LiteLLM price map (JSON) or an override file (TOML or JSON).")],
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Import prices: a LiteLLM map replaces the bundled one; an override file sets your own."""
    from analysis.pricing.files import PriceFileError
    from analysis.pricing.importing import import_price_file

    try:
        result = import_price_file(file, data)
    except PriceFileError as e:
        raise fail(str(e)) from e
    what = "LiteLLM price map" if result.kind == "litellm" else "overrides"
    console.print(
        f"Imported {what} ({result.models:,} models) from {file}; price version is now {result.version}.",
        highlight=False,
    )
    console.print(
        "Stored calls keep the prices they were recorded with: run `llm-shadow reprice` to recompute them.",
        highlight=False,
    )


@prices_app.command("reset")
def prices_reset(data: DataDir = Path(DEFAULT_DATA_DIR)):
    """Forget imported prices and go back to the bundled snapshot."""
    from analysis.pricing.importing import reset_prices

    removed = reset_prices(data)
    version = load_prices(data).version
    if removed:
        console.print(f"Removed {', '.join(p.name for p in removed)}; price version is now {version}.", highlight=False)
    else:
        console.print(f"No imported prices; price version is {version}.", highlight=False)


@prices_app.command("missing")
def prices_missing(
    fmt: Format = "table",
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """List recorded models that have no price (cost_source 'unpriced'), with call counts."""
    from analysis.pricing.unpriced import unpriced_models

    check_format(fmt)
    table = load_prices(data)
    store = open_store(data, read_only=True)
    with store.connect() as con:
        frame = unpriced_models(con, table)
    if frame.height == 0 and fmt == "table":
        console.print("Every recorded call with token counts has a price.", highlight=False)
        return
    print_frame(frame, fmt, console, title="Unpriced models")
    if fmt == "table" and frame["priced_now"].is_not_null().any():
        console.print(
            "Models with a `priced_now` are priced by the current table: run "
            "`llm-shadow reprice` to fill in their stored costs.",
            highlight=False,
        )


@prices_app.command("use")
def prices_use(
    table_name: Annotated[str, typer.Argument(metavar="TABLE", help="litellm or genai-prices.")],
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Choose the primary price table (the other one checks every cost)."""
    from analysis.pricing.check import set_primary
    from analysis.pricing.files import PriceFileError

    try:
        set_primary(data, table_name)
    except PriceFileError as e:
        raise fail(str(e)) from e
    pricing = load_pricing(data)
    console.print(
        f"Primary price table: {pricing.primary_name} ({pricing.version}), checked against "
        f"{pricing.other.version}. New calls use it; `llm-shadow reprice` applies it to stored calls "
        "(restart running proxies).",
        highlight=False,
    )


@prices_app.command("compare")
def prices_compare(
    model: Annotated[
        str | None, typer.Argument(help="A model; default: every recorded model the tables disagree on.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Provider selling it: openai, anthropic, gemini, ...")] = None,
    fmt: Format = "table",
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Both price tables' per-token rates side by side (USD per 1M tokens), with what differs."""
    import polars as pl

    from analysis.pricing.compare import compare_model, compare_recorded

    check_format(fmt)
    pricing = load_pricing(data)
    if model is not None:
        frame = pl.DataFrame([compare_model(pricing, model, provider)])
    else:
        store = open_store(data, read_only=True)
        with store.connect() as con:
            frame = compare_recorded(con, pricing)
        if frame.height == 0:
            console.print("The two price tables agree on every recorded call they both price.", highlight=False)
            return
    print_frame(
        frame, fmt, console, title=f"litellm ({pricing.litellm.version}) vs genai-prices ({pricing.genai.version})"
    )


@app.command()
def reprice(data: DataDir = Path(DEFAULT_DATA_DIR)):
    """Recompute the cost of every stored call with the current price table."""
    from analysis.pricing.reprice import reprice_store

    table = load_pricing(data)
    store = open_store(data)
    summary = reprice_store(store, table)
    by_source = ", ".join(f"{n:,} {s}" for s, n in sorted(summary.sources.items()))
    console.print(
        f"Repriced {summary.rows:,} calls with price version {table.version} "
        f"(checked against {table.other.version}): "
        f"{summary.changed:,} changed ({by_source or 'none stored'}).",
        highlight=False,
    )
    if summary.sources.get("unpriced"):
        err_console.print(
            f"[bold yellow]Warning:[/] {summary.sources['unpriced']:,} calls still have no "
            "price: see llm-shadow prices missing",
            highlight=False,
        )


# --- end of prices commands ----------------------------------------------------------------------


# --- report and demo commands --------------------------------------------------------------------

REPORT_FORMATS = ("html", "md")
SAMPLE_TRAFFIC = Path(__file__).resolve().parent / "sample_traffic"
# examples/policy.toml with its budgets and rate limits scaled to the small sample month.
DEMO_POLICY = Path(__file__).resolve().parent / "sample_traffic" / "demo-policy.toml"


def gather_report(data: Path, since: datetime | None, until: datetime | None, simulation=None, realised=None) -> dict:
    from reports.data import EmptyReport, gather

    store = open_store(data, read_only=True)
    with store.connect() as con:
        try:
            return gather(con, since, until, simulation, realised=realised)
        except EmptyReport as e:
            raise fail(f"{e} in {data}") from e


def simulate_for_report(policy: Path, data: Path, since: datetime | None, until: datetime | None):
    """Run the policy over the recorded calls (as `simulate` does), store the run, return it."""
    from analysis.simulate.runs import save_run
    from reports.simulation_data import SimulationRun

    result = _simulate_one(policy, data, since, until, show_progress=err_console.is_terminal)
    try:
        stored = save_run(data, result)
    except OSError as e:
        raise fail(f"cannot store the run under {data / 'simulations'}: {e.strerror or e}") from e
    return SimulationRun(result=stored.info["result"], decisions=result.decisions, run_id=stored.run_id)


def write_report(report: dict, out: Path, fmt: str) -> Path:
    from reports.html import render_html
    from reports.markdown import render_markdown

    text = render_html(report) if fmt == "html" else render_markdown(report)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise fail(f"cannot write {out}: {e.strerror or e}") from e
    return out


@app.command()
def report(
    policy: Annotated[
        Path | None, typer.Option(help="Policy file to simulate (TOML); the report shows what it would have saved.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="File to write [default: report.html; Markdown goes to stdout].")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="html (one offline file with charts) or md (Markdown for a ticket).")
    ] = "html",
    since: Since = None,
    until: Until = None,
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Write the spend report: spend, latency, errors, data quality and, with --policy, savings."""
    if fmt not in REPORT_FORMATS:
        raise fail(f"unknown format {fmt!r}; choose one of {', '.join(REPORT_FORMATS)}")
    if policy is not None and not policy.is_file():
        raise fail(f"--policy {policy}: no such file")
    open_store(data, read_only=True)
    simulation = simulate_for_report(policy, data, since, until) if policy is not None else None
    figures = gather_report(data, since, until, simulation, realised_view(data, policy, since, until))
    if fmt == "md" and out is None:
        from reports.markdown import render_markdown

        print(render_markdown(figures), end="")
        return
    path = write_report(figures, out or Path("report.html"), fmt)
    console.print(f"Wrote {path}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Demo directory: its data/ is recorded afresh on every run.")] = Path(
        "shadow-demo"
    ),
    scale: Annotated[
        float,
        typer.Option(
            min=0.01,
            max=200,
            help="Size of the company month: 20 (the default) is about 29,000 calls; 1 about 1,500.",
        ),
    ] = 20.0,
):
    """The whole job on a company's month: generate and record it, simulate the demo policy, report."""
    from rich.markup import escape

    from addons.importer import default_workers, record_flows
    from reports.demo import DemoDirError, command_for_new_shell, headline_figures, prepare_demo_dir, scaled_policy
    from reports.progress import counting_progress
    from sample_traffic.company import DEFAULT_SEED, DayFlows, calls_per_day

    if not DEMO_POLICY.is_file():
        raise fail(f"the demo policy is missing: {DEMO_POLICY}")
    try:
        data = prepare_demo_dir(out)
    except DemoDirError as e:
        raise fail(str(e)) from e
    except OSError as e:
        raise fail(f"cannot prepare {out}: {e}") from e
    open_store(data, create=True)
    days = calls_per_day(DEFAULT_SEED, scale)
    description = "generating and recording the month"
    with counting_progress(description, "calls", err_console) as progress:
        task = progress.add_task(description, total=sum(days))
        result = record_flows(
            DayFlows(DEFAULT_SEED, scale),
            [i for i, n in sorted(enumerate(days), key=lambda d: -d[1]) if n],  # the busiest days first
            RecorderSettings(data=data, queue_limit=0),
            workers=default_workers(sum(days)),
            on_progress=lambda n: progress.advance(task, n),
        )
    console.print(
        f"Recorded {result.recorded:,} LLM calls of Kestrel Bank's month (scale {scale:g}) through the "
        f"recorder into {data}.",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    from analysis.store import stats as stats_queries

    with open_store(data).connect() as con:
        total = stats_queries.totals(con)
    policy = out / "policy.toml"
    policy.write_text(scaled_policy(DEMO_POLICY.read_text(), total.calls, total.cost_usd or 0.0))
    simulation = simulate_for_report(policy, data, None, None)
    console.print(
        f"Simulated {policy} ({DEMO_POLICY.relative_to(DEMO_POLICY.parents[1])}, its budgets and rate limits "
        f"scaled to this month) over them (run {simulation.run_id}).",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    figures = gather_report(data, None, None, simulation)
    path = write_report(figures, out / "report.html", "html")
    console.print(f"\nReport: [bold]{escape(str(path.resolve()))}[/]", highlight=False, soft_wrap=True)
    for label, value in headline_figures(figures):
        console.print(f"  {label + ':':<17} {value}", highlight=False, soft_wrap=True, markup=False)
    console.print(
        f"\nExplore further: {command_for_new_shell()} stats --data {shlex.quote(str(data))}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


# --- export --------------------------------------------------------------------------------------

export_app = typer.Typer(help="Send recorded calls to other systems.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("otlp")
def export_otlp(
    endpoint: Annotated[
        str | None,
        typer.Option(
            envvar="OTEL_EXPORTER_OTLP_ENDPOINT",
            help="The collector's OTLP/HTTP base URL, e.g. http://localhost:4318 (env OTEL_EXPORTER_OTLP_ENDPOINT).",
        ),
    ] = None,
    start: Annotated[str | None, typer.Option("--from", help="First day (UTC), YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Day after the last (UTC), YYYY-MM-DD.")] = None,
    content: Annotated[
        bool, typer.Option("--content", help="Include the recorded prompt and answer text in the spans (opt-in).")
    ] = False,
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Send recorded calls to an OpenTelemetry collector as GenAI spans and metrics (a backfill)."""
    from analysis.recording.otel import OtlpExporter

    if not endpoint:
        raise fail("say where to send: --endpoint http://HOST:4318 or OTEL_EXPORTER_OTLP_ENDPOINT")
    since, until = parse_date(start, "--from"), parse_date(end, "--to")
    store = open_store(data, read_only=True)
    rows = store.requests_frame(since, until).to_dicts()
    contents = {c["id"]: c for c in store.contents_frame(since, until).to_dicts()} if content else {}
    exporter = OtlpExporter(endpoint)
    for row in rows:
        exporter.export(row, contents.get(row["id"], {}) if content else None)
    exporter.close()
    if exporter.spans.failed:
        raise fail(f"could not send {exporter.spans.failed:,} of {len(rows):,} calls to {endpoint} (see the log above)")
    console.print(f"Sent {len(rows):,} calls to {endpoint} as OpenTelemetry spans and metrics.", highlight=False)


# --- policy files ---------------------------------------------------------------------------------

policy_app = typer.Typer(help="Policy files: export them to other gateways.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("export")
def policy_export(
    policy_file: Annotated[Path, typer.Argument(help="The policy file (TOML).", metavar="POLICY")],
    to: Annotated[str, typer.Option("--to", help="The gateway whose configuration to write: litellm.")] = "litellm",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the configuration to this file (default: standard output).")
    ] = None,
):
    """Write the gateway configuration closest to a policy file, and list what it cannot express."""
    import yaml

    from analysis.simulate.litellm_config import to_litellm

    if to != "litellm":
        raise fail(f"--to: unknown gateway {to!r}; known: litellm")
    policy = _read_policy(policy_file)
    exported = to_litellm(policy)
    header = [
        f"# LiteLLM proxy config (litellm --config FILE) from the llm-shadow policy {policy_file.name}",
        "# (llm-shadow policy export --to litellm): the closest LiteLLM's config.yaml expresses.",
    ]
    if exported.not_expressed:
        header.append("# Not expressed here (or only approximately):")
        header += [f"#   - {line}" for line in exported.not_expressed]
    text = "\n".join(header) + "\n" + yaml.safe_dump(exported.config, sort_keys=False, allow_unicode=True)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text)
    except OSError as e:
        raise fail(f"cannot write {out}: {e.strerror}") from e
    console.print(f"Wrote the LiteLLM config to {out}.", highlight=False)
    if exported.not_expressed:
        console.print("Not expressed there (or only approximately):", highlight=False)
        for line in exported.not_expressed:
            console.print(f"  - {line}", highlight=False, markup=False)


# --- end of report and demo commands -------------------------------------------------------------


# --- simulate commands ---------------------------------------------------------------------------


def _read_policy(path: Path):
    from analysis.simulate.policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as e:
        raise fail(str(e)) from e


def _simulate_one(policy_path: Path, data: Path, since: datetime | None, until: datetime | None, show_progress: bool):
    """Load the traffic, run one policy file over it; the SimulationResult."""
    from analysis.simulate.baseline import read_baseline
    from analysis.simulate.embedders import EmbedderError
    from analysis.simulate.policy import PolicyError
    from analysis.simulate.pricer import Pricer
    from analysis.simulate.simulator import simulate as run_simulation

    policy = _read_policy(policy_path)
    prices = load_prices(data)
    store = open_store(data, read_only=True)
    # Calls enforce mode answered, moved or refused are read back as the calls they stood for.
    requests = read_baseline(store, since, until, Pricer(prices)).requests
    if requests.height == 0:
        raise fail("no recorded requests in that range")
    parameters = {
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "policy_path": str(policy_path),
    }
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task("simulating", total=requests.height)

        def on_progress(stage: str, done: int, total: int) -> None:
            progress.update(task, description=f"{policy_path.name}: {stage}", completed=done, total=total)

        try:
            return run_simulation(
                policy,
                requests,
                lambda: store.contents_frame(since, until),
                prices=prices,
                data_dir=data,
                parameters=parameters,
                progress=on_progress,
            )
        except (PolicyError, EmbedderError) as e:
            raise fail(str(e)) from e


@app.command()
def simulate(
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy file (TOML); see examples/policy.toml.")
    ] = None,
    compare: Annotated[
        tuple[Path, Path] | None, typer.Option("--compare", help="Two policy files to put side by side.")
    ] = None,
    since: Since = None,
    until: Until = None,
    fmt: TableOrJson = "table",
    save: Annotated[bool, typer.Option("--save/--no-save", help="Store the run under <data>/simulations/.")] = True,
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Replay recorded traffic against a policy file: spend, savings and what the policy costs."""
    import json

    from analysis.simulate.runs import save_run
    from reports.simulate_tables import print_comparison, print_result

    if fmt not in ("table", "json"):
        raise fail(f"unknown format {fmt!r}; choose table or json")
    if (policy is None) == (compare is None):
        raise fail("give either --policy FILE or --compare A.toml B.toml")
    files = [policy] if policy is not None else list(compare or ())
    show_progress = fmt == "table" and err_console.is_terminal
    results = [_simulate_one(f, data, since, until, show_progress) for f in files]
    try:
        stored = [save_run(data, r) for r in results] if save else [None] * len(results)
    except OSError as e:
        raise fail(f"cannot store the run under {data / 'simulations'}: {e.strerror or e} (--no-save: do not)") from e
    outputs = [{"run_id": s.run_id if s else None, **r.to_dict()} for r, s in zip(results, stored, strict=True)]
    if fmt == "json":
        document = outputs[0] if policy is not None else {"a": outputs[0], "b": outputs[1]}
        print(json.dumps(json_ready(document), indent=2, default=str))
        return
    if policy is not None:
        print_result(outputs[0], console)
    else:
        print_comparison(outputs[0], outputs[1], (files[0].name, files[1].name), console)
    for s in stored:
        if s is not None:
            console.print(f"Stored as run {s.run_id} ({s.directory}).", highlight=False)


@app.command()
def explain(
    request_id: Annotated[
        str, typer.Argument(help="Id of a recorded request (see: llm-shadow sql 'select id from requests').")
    ],
    policy: Annotated[Path, typer.Option("--policy", help="Policy file (TOML).")],
    since: Annotated[
        datetime | None,
        typer.Option(
            "--from", parser=_since, metavar="YYYY-MM-DD", help="First day (UTC) of the traffic replayed before it."
        ),
    ] = None,
    until: Until = None,
    fmt: TableOrJson = "table",
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Say which policy rule decided one recorded request, and why."""
    import json

    from analysis.simulate.baseline import read_baseline
    from analysis.simulate.embedders import EmbedderError
    from analysis.simulate.explain import RequestNotFound
    from analysis.simulate.explain import explain as explain_request
    from analysis.simulate.policy import PolicyError
    from analysis.simulate.pricer import Pricer
    from analysis.simulate.simulator import build_engine
    from reports.simulate_tables import print_explanation

    if fmt not in ("table", "json"):
        raise fail(f"unknown format {fmt!r}; choose table or json")
    rules = _read_policy(policy)
    prices = load_prices(data)
    store = open_store(data, read_only=True)
    try:
        engine = build_engine(rules, prices, data_dir=data)
        requests = read_baseline(store, since, until, Pricer(prices)).requests  # as `simulate` reads them
        result = explain_request(engine, requests, lambda: store.contents_frame(since, until), request_id)
    except (PolicyError, EmbedderError, RequestNotFound) as e:
        raise fail(str(e)) from e
    if fmt == "json":
        print(json.dumps(json_ready(result.to_dict()), indent=2, default=str))
    else:
        print_explanation(result.to_dict(), console)


def _show_pair(number: int, total: int, pair: dict) -> None:
    console.rule(f"pair {number} of {total}: similarity {pair['similarity']:.3f}")
    for title, key in (
        ("request", "request_prompt"),
        ("cached prompt", "cached_prompt"),
        ("answer it got", "request_answer"),
        ("answer the cache would serve", "cached_answer"),
    ):
        text = pair.get(key)
        console.print(f"[bold]{title}:[/] {shown(text if text is not None else '(not recorded)')}", soft_wrap=True)


def _print_precision(rows: list[dict], source: str = "your labels") -> None:
    from rich.table import Table

    table = Table(title=f"Semantic cache precision from {source} (Wilson 95% interval)")
    for name in ("threshold", "pairs labelled", "precision", "interval", "hits in unlabelled bands"):
        table.add_column(name, justify="right")
    for row in rows:
        interval = row["interval"]
        table.add_row(
            f"{row['threshold']:.2f}",
            f"{row['labelled']:,}",
            "-" if row["precision"] is None else f"{row['precision'] * 100:.1f}%",
            "-" if interval is None else f"{interval[0] * 100:.1f}% - {interval[1] * 100:.1f}%",
            f"{row['hits_in_unlabelled_bands']:,}",
        )
    console.print(table)


@app.command()
def label(
    run_id: Annotated[str, typer.Argument(help="A stored simulation run (see the id `simulate` prints).")],
    summary: Annotated[
        bool, typer.Option("--summary", help="Only print the precision from the labels so far.")
    ] = False,
    judge_url: Annotated[
        str | None,
        typer.Option("--judge-url", help="Let a chat model label the pairs: an OpenAI-compatible base URL."),
    ] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="The judge's model (needs a price).")] = None,
    judge_api_key_env: Annotated[
        str, typer.Option("--judge-api-key-env", help="Name of the variable holding the judge's key.")
    ] = "OPENAI_API_KEY",
    max_spend: Annotated[float, typer.Option("--max-spend", help="The judge's spending cap (USD).")] = 1.0,
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Label a run's sampled semantic-cache pairs (y: same question, n: different, s: skip, q: quit);
    labels are kept with the run, so you can stop and resume; prints precision per threshold.
    With --judge-url and --judge-model a chat model labels them instead, its spend capped."""
    import os

    from analysis.simulate.labels import load_labels, pairs_to_label, precision_by_threshold, save_labels
    from analysis.simulate.runs import RunNotFound, load_run

    try:
        run = load_run(data, run_id)
    except RunNotFound as e:
        raise fail(str(e)) from e
    result = run.info["result"]
    pairs = pairs_to_label(result)
    if not pairs:
        raise fail(f"run {run_id} has no semantic-cache pairs to label (no semantic cache, or no hits)")
    if judge_url is not None or judge_model is not None:
        from analysis.simulate.evaluation import EvaluationError
        from analysis.simulate.judge import judge_pairs

        if judge_url is None or judge_model is None:
            raise fail("a judge needs both --judge-url and --judge-model")
        if max_spend <= 0:
            raise fail("--max-spend must be above 0")
        try:
            judged, spent, left = judge_pairs(
                pairs,
                run.directory,
                url=judge_url,
                model=judge_model,
                api_key=os.environ.get(judge_api_key_env),
                prices=load_prices(data),
                max_spend_usd=max_spend,
            )
        except EvaluationError as e:
            raise fail(str(e)) from e
        console.print(
            f"Judge {judge_model}: {len(judged):,} of {len(pairs):,} pairs judged, {usd(spent)} spent now"
            + (f", {left:,} left by the spending cap" if left else ""),
            highlight=False,
        )
        _print_precision(precision_by_threshold(result, judged), "the judge's labels")
        return
    labels = load_labels(run.directory)
    todo = [p for p in pairs if p["request_id"] not in labels]
    if not summary:
        console.print(
            f"{len(pairs) - len(todo)} of {len(pairs)} pairs already labelled. Does the cached answer's prompt "
            "ask the same thing as the request? y = same, n = different, s = skip, q = quit.",
            highlight=False,
        )
        answers = {"y": "y", "n": "n", "s": "skip", "skip": "skip"}
        for number, pair in enumerate(todo, start=len(pairs) - len(todo) + 1):
            _show_pair(number, len(pairs), pair)
            verdict = None
            while verdict is None:
                console.print("same question? [y/n/s/q] ", end="")
                line = sys.stdin.readline()
                if not line or line.strip().lower() == "q":
                    break
                verdict = answers.get(line.strip().lower())
            if verdict is None:
                break
            labels[pair["request_id"]] = verdict
            save_labels(run.directory, labels)
        console.print()
    _print_precision(precision_by_threshold(result, labels))


@app.command()
def evaluate(
    policy: Annotated[Path, typer.Option("--policy", help="Policy file (TOML) whose routing rules to evaluate.")],
    rule: Annotated[str | None, typer.Option("--rule", help="Only this routing rule (its name).")] = None,
    sample: Annotated[int, typer.Option("--sample", help="Requests sampled per rule.")] = 200,
    max_spend: Annotated[float, typer.Option("--max-spend", help="Stop before spending more than this (USD).")] = 5.0,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream", help="Base URL to send to [default: https:// the recorded host].", show_default=False
        ),
    ] = None,
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="Name of the variable holding the provider key.")
    ] = "OPENAI_API_KEY",
    start: Annotated[str | None, typer.Option("--from", help="First day (UTC), YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Day after the last (UTC), YYYY-MM-DD.")] = None,
    mirrored: Annotated[
        bool,
        typer.Option(
            "--mirrored",
            help="Send nothing: compare the answers shadow-mode mirroring got (a rule's `mirror` share) instead.",
        ),
    ] = False,
    data: DataDir = Path(DEFAULT_DATA_DIR),
):
    """Measure routing quality: send a sample of the recorded requests each rule would route to its
    target model through the real provider, and compare the answers with the recorded ones."""
    import os

    from analysis.simulate.embedders import EmbedderError, make_embedder
    from analysis.simulate.evaluation import (
        EvaluationError,
        candidates,
        mirrored_answers,
        run_evaluation,
        save_evaluation,
        summarise,
    )
    from analysis.simulate.policy import PolicyError
    from analysis.simulate.replay import decisions_frame
    from analysis.simulate.simulator import build_engine, replay_frames

    if sample < 1:
        raise fail("--sample must be at least 1")
    if max_spend <= 0:
        raise fail("--max-spend must be above 0")
    since, until = parse_date(start, "--from"), parse_date(end, "--to")
    rules = _read_policy(policy)
    if not rules.routing:
        raise fail(f"{policy} has no [[routing]] rules to evaluate")
    if rule is not None and rule not in {r.name for r in rules.routing}:
        raise fail(f"no routing rule named {rule!r} in {policy}")
    prices = load_prices(data)
    store = open_store(data)
    if mirrored:
        from analysis.enforce.mirror import read_mirrors

        mirrors = read_mirrors(data)
        if mirrors.is_empty():
            raise fail(
                f"no mirrored answers in {data}/mirrors: give a routing rule `mirror` and run the proxy in shadow mode"
            )
        try:
            embedder = make_embedder("wordllama", url=None, model=None, api_key_env=None, data_dir=data)
            answers, skipped = mirrored_answers(
                rules, mirrors, store.contents_frame(since, until).select("id", "response_text"), rule=rule
            )
            summary, answers = summarise(rules, answers, skipped, {}, embedder)
        except EmbedderError as e:
            raise fail(str(e)) from e
        from analysis.enforce.mirror import read_counts

        counts = dict(read_counts(data))
        info = {"policy_file": str(policy), "source": "mirror", "mirror_counts": counts}
        _print_evaluation(save_evaluation(data, summary, answers, info), summary)
        if counts:  # what the proxies that stopped counted: nothing dropped or capped goes unsaid
            console.print(
                "Mirrored by the proxy: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sorted(counts.items()))
            )
        return
    try:
        engine = build_engine(rules, prices, data_dir=data)
        requests = store.requests_frame(since, until)
        run = replay_frames(engine, requests, lambda: store.contents_frame(since, until))
        decisions = decisions_frame(engine, run.facts, run.trace)
        contents = store.contents_frame(since, until).select("id", "request_json", "response_text")
        frame = run.requests.select("id", "endpoint", "host", "path").join(
            contents.unique("id", keep="first"), on="id", how="left", maintain_order="left"
        )
        chosen, skipped = candidates(rules, decisions, frame, rule=rule, sample=sample, upstream=upstream)
        embedder = make_embedder("wordllama", url=None, model=None, api_key_env=None, data_dir=data)
        summary, answers = run_evaluation(
            rules,
            chosen,
            skipped,
            prices=prices,
            embedder=embedder,
            api_key=os.environ.get(api_key_env),
            max_spend_usd=max_spend,
        )
    except (PolicyError, EmbedderError, EvaluationError) as e:
        raise fail(str(e)) from e
    evaluation_id = save_evaluation(
        data, summary, answers, {"policy_file": str(policy), "sample": sample, "max_spend_usd": max_spend}
    )
    _print_evaluation(evaluation_id, summary)


def _print_evaluation(evaluation_id: str, summary: dict) -> None:
    from rich.table import Table

    from reports.simulate_tables import quality_text

    table = Table(title=f"Routing quality, evaluation {evaluation_id}")
    for name in ("rule", "to", "evaluated", "quality", "cost", "not evaluated"):
        table.add_column(name)
    for name, row in summary.items():
        shown = quality_text({"evaluation": row}) if row["evaluated"] else "nothing evaluated"
        reasons = ", ".join(f"{k} {v:,}" for k, v in row["not_evaluated"].items()) or "-"
        table.add_row(name, row["to"], f"{row['evaluated']:,}", shown, usd(row["cost_usd"]), reasons)
    console.print(table)


# --- end of simulate commands --------------------------------------------------------------------


# --- transparent capture commands: ca, doctor --------------------------------------------------


@app.command()
def ca(
    confdir: ConfdirOption = DEFAULT_CONFDIR,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Also write a CA bundle (system CAs + this CA) here, for SSL_CERT_FILE."),
    ] = None,
):
    """Show where the interception CA is and how to make clients trust it (creates it if missing)."""
    from addons.ca import ensure_ca
    from analysis.capture_setup.ca import (
        fingerprint_sha256,
        load_cert,
        system_bundle,
        trust_instructions,
        write_bundle,
    )
    from reports.capture_setup_tables import trust_table

    try:
        files, tightened = ensure_ca(confdir.expanduser())
        if bundle is not None:
            write_bundle(bundle.expanduser(), files.cert, system_bundle())
    except OSError as e:
        raise fail(f"{e.strerror}: {e.filename}") from e
    cert = load_cert(files.cert)
    console.print(f"CA certificate (give this to clients): [bold]{files.cert}[/]", highlight=False)
    console.print(
        f"  subject {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}", highlight=False
    )
    console.print(f"  SHA-256 {fingerprint_sha256(cert)}", highlight=False)
    if bundle is not None:
        console.print(f"CA bundle (system CAs + this CA): [bold]{bundle.expanduser()}[/]", highlight=False)
    shown_bundle = bundle.expanduser() if bundle is not None else Path("<bundle.pem>")
    console.print(trust_table(trust_instructions(files.cert, shown_bundle)))
    if bundle is None:
        console.print(
            "SSL_CERT_FILE, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE replace a client's CA store: point "
            "them at a bundle of the system CAs plus this CA, which "
            "[bold]llm-shadow ca --bundle <bundle.pem>[/] writes.",
            highlight=False,
        )
    for path in tightened:
        console.print(f"[yellow]Tightened {path} to mode 0600.[/]", highlight=False)
    keys = ", ".join(str(p) for p in files.key_files)
    console.print(
        f"[bold red]Private key:[/] {keys}\n"
        "  Anyone holding it can impersonate any HTTPS site to every client that trusts this CA. "
        "Keep it readable by you only (llm-shadow creates it 0600), never commit it, never copy it into "
        "an image or a ConfigMap: clients need only the certificate.",
        highlight=False,
    )


@app.command()
def doctor(
    confdir: ConfdirOption = DEFAULT_CONFDIR,
    data: DataDir = Path(DEFAULT_DATA_DIR),
    port: Annotated[int, typer.Option(help="The port the proxy listens on.")] = 8080,
    proxy_user: Annotated[
        str | None, typer.Option(help="The user the proxy runs as, if not you (for the redirect-loop check).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="How the proxy captures: reverse (--upstream: no CA, no redirect rule), forward, transparent "
            "or local; checks that do not apply are skipped.",
        ),
    ] = "transparent",
):
    """Check what breaks capture (CA trust and key, redirect loop, port, data dir, tiktoken files)."""
    from analysis.capture_setup.ca import CaFiles
    from analysis.capture_setup.doctor import CAPTURE_MODES, UnknownUserError, proxy_connection_for, run_checks
    from reports.capture_setup_tables import doctor_table

    if mode not in CAPTURE_MODES:
        raise fail(f"--mode {mode!r}: choose one of {', '.join(CAPTURE_MODES)}")
    try:
        conn = proxy_connection_for(proxy_user)
    except UnknownUserError as e:
        raise fail(f"--proxy-user: {e}") from e
    results = run_checks(CaFiles(confdir.expanduser()), data, port, conn=conn, mode=mode)
    console.print(doctor_table(results))
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        raise fail(f"{len(failed)} check(s) failed: {', '.join(failed)}")


# --- end of transparent capture commands ---------------------------------------------------------


# --- wrapped keys --------------------------------------------------------------------------------

keys_app = typer.Typer(
    help="Wrapped keys (lsk-...): what applications hold instead of the real provider key.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


def key_registry(data: Path, state: str | None):
    """The wrapped-key registry of this --state: <data>/keys.json, or Redis."""
    from analysis.shared_state.backend import BadStateURL, RedisBackend, open_backend
    from analysis.shared_state.keys import FileKeys, KeyRegistry, RedisKeys

    try:
        backend = open_backend(state)
    except BadStateURL as e:
        raise fail(str(e)) from e
    if isinstance(backend, RedisBackend):
        return KeyRegistry(RedisKeys(backend.link))
    return KeyRegistry(FileKeys(data))


def keys_command(action):
    """Run a registry action; a refused one or an unreachable Redis is a one-line error."""
    import redis

    from analysis.shared_state.keys import WrappedKeyError

    try:
        return action()
    except WrappedKeyError as e:
        raise fail(str(e)) from e
    except redis.RedisError as e:
        raise fail(f"Redis: {e}") from e
    except OSError as e:
        raise fail(str(e)) from e


@keys_app.command("create")
def keys_create(
    team: Annotated[str, typer.Option(help="Team the key's calls are attributed to.")],
    provider_key_env: Annotated[
        str,
        typer.Option(
            help="Name of the environment variable holding the real provider key; the proxy reads it at start."
        ),
    ],
    feature: Annotated[str | None, typer.Option(help="Feature the key's calls are attributed to.")] = None,
    user: Annotated[str | None, typer.Option(help="User the key's calls are attributed to.")] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Spend allowed per window; past it, calls get 429 (shadow/enforce mode).")
    ] = None,
    window: Annotated[str | None, typer.Option(help="The budget's window: day or month (UTC).")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h (default: none).")] = None,
    data: DataDir = Path(DEFAULT_DATA_DIR),
    state: StateOption = None,
):
    """Create a wrapped key and print it once (it is stored only as a salted hash)."""
    from analysis.shared_state.keys import parse_duration

    registry = key_registry(data, state)

    def create():
        lifetime = parse_duration(expires) if expires is not None else None
        return registry.create(team, provider_key_env, feature, user, budget_usd, window, lifetime)

    record, text = keys_command(create)
    err_console.print(
        f"Created wrapped key {record.key_id} for team {record.team}; shown once, store it now:", highlight=False
    )
    print(text)


@keys_app.command("list")
def keys_list(fmt: Format = "table", data: DataDir = Path(DEFAULT_DATA_DIR), state: StateOption = None):
    """List wrapped keys (ids, attribution, budget, expiry, status; never the keys)."""
    import time

    import polars as pl

    records = keys_command(key_registry(data, state).list)
    now = time.time()

    def when(ts: float | None) -> str | None:
        return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")

    frame = pl.DataFrame(
        [
            {
                "key_id": r.key_id,
                "team": r.team,
                "feature": r.feature,
                "user": r.user,
                "budget_usd": r.budget_usd,
                "window": r.window,
                "provider_key_env": r.provider_key_env,
                "created": when(r.created_at),
                "expires": when(r.expires_at),
                "status": r.status(now),
            }
            for r in records
        ],
        schema={
            "key_id": pl.Utf8,
            "team": pl.Utf8,
            "feature": pl.Utf8,
            "user": pl.Utf8,
            "budget_usd": pl.Float64,
            "window": pl.Utf8,
            "provider_key_env": pl.Utf8,
            "created": pl.Utf8,
            "expires": pl.Utf8,
            "status": pl.Utf8,
        },
    )
    print_frame(frame, check_format(fmt), console, title="Wrapped keys")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (lsk-... as `keys list` shows it).")],
    data: DataDir = Path(DEFAULT_DATA_DIR),
    state: StateOption = None,
):
    """Revoke a wrapped key: every proxy refuses it within a second."""
    record = keys_command(lambda: key_registry(data, state).revoke(key_id))
    console.print(f"Revoked {record.key_id} (team {record.team}).", highlight=False)


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The key's id (lsk-... as `keys list` shows it).")],
    data: DataDir = Path(DEFAULT_DATA_DIR),
    state: StateOption = None,
):
    """Give a wrapped key a new secret (same id, team and budget) and print it once; the old one stops working."""
    record, text = keys_command(lambda: key_registry(data, state).rotate(key_id))
    err_console.print(f"Rotated {record.key_id}; the old key no longer works. New key, shown once:", highlight=False)
    print(text)


_proxy_stopped: list[bool] = []


def main() -> None:  # pragma: no cover
    try:
        app()
    except StoreError as e:
        err_console.print(f"[bold red]Error:[/] {e}", highlight=False)
        sys.exit(1)
    except SystemExit as e:
        if _proxy_stopped and e.code in (None, 0):
            # The proxy stopped cleanly: skip the interpreter's teardown of the libraries it
            # loaded (about a second), so that stopping takes as long as the last flush.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise


if __name__ == "__main__":
    main()
