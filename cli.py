"""llm-shadow command line (minimal: only the transparent-capture commands until the core merges)."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Shadow analyzer and savings simulator for LLM API traffic.")
err_console = Console(stderr=True)


# --- transparent capture commands: ca, doctor ---
# Options shared with `llm-shadow proxy`, which must pass the same confdir to mitmproxy
# (options.confdir) and call addons.ca.ensure_ca(confdir) before starting.
ConfdirOption = Annotated[
    Path,
    typer.Option(
        "--confdir",
        envvar="LLM_SHADOW_CONFDIR",
        help="mitmproxy configuration directory holding the interception CA.",
    ),
]
DEFAULT_CONFDIR = Path("~/.mitmproxy")
DEFAULT_PORT = 8080


@app.command()
def ca(
    confdir: ConfdirOption = DEFAULT_CONFDIR,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Also write a CA bundle (system CAs + this CA) here, for SSL_CERT_FILE."),
    ] = None,
) -> None:
    """Show where the interception CA is and how to make clients trust it (creates it if missing)."""
    from addons.ca import ensure_ca
    from analysis.ca_files import (
        fingerprint_sha256,
        load_cert,
        system_bundle,
        trust_instructions,
        write_bundle,
    )

    console = Console()
    try:
        files, tightened = ensure_ca(confdir.expanduser())
        if bundle is not None:
            write_bundle(bundle.expanduser(), files.cert, system_bundle())
    except OSError as e:
        err_console.print(f"error: {e.strerror}: {e.filename}")
        raise typer.Exit(1) from e
    cert = load_cert(files.cert)
    console.print(f"CA certificate (give this to clients): [bold]{files.cert}[/]")
    console.print(f"  subject {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    console.print(f"  SHA-256 {fingerprint_sha256(cert)}")
    if bundle is not None:
        console.print(f"CA bundle (system CAs + this CA): [bold]{bundle.expanduser()}[/]")
    shown_bundle = bundle.expanduser() if bundle is not None else Path("<bundle.pem>")
    table = Table(title="Trust it", show_header=True, header_style="bold")
    table.add_column("client")
    table.add_column("command")
    for where, command in trust_instructions(files.cert, shown_bundle):
        table.add_row(where, command)
    console.print(table)
    if bundle is None:
        console.print(
            "SSL_CERT_FILE, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE replace a client's CA store: point them at "
            "a bundle of the system CAs plus this CA, which [bold]llm-shadow ca --bundle <bundle.pem>[/] writes."
        )
    for path in tightened:
        console.print(f"[yellow]tightened {path} to mode 0600[/]")
    keys = ", ".join(str(p) for p in files.key_files)
    console.print(
        f"[bold red]Private key:[/] {keys}\n"
        "  Anyone holding it can impersonate any HTTPS site to every client that trusts this CA. "
        "Keep it readable by you only (it is created 0600), never commit it, never copy it into an "
        "image or a ConfigMap: clients need only the certificate."
    )


@app.command()
def doctor(
    confdir: ConfdirOption = DEFAULT_CONFDIR,
    data_dir: Annotated[
        Path, typer.Option(envvar="LLM_SHADOW_DATA_DIR", help="Where llm-shadow writes its records.")
    ] = Path("shadow-data"),
    port: Annotated[int, typer.Option(help="The port the proxy listens on.")] = DEFAULT_PORT,
) -> None:
    """Check the things that break capture (CA trust, redirect loop, port, data dir, tiktoken)."""
    from analysis.ca_files import CaFiles
    from analysis.doctor import run_checks

    results = run_checks(CaFiles(confdir.expanduser()), data_dir.expanduser(), port)
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    table = Table(show_header=True, header_style="bold")
    for column in ("check", "status", "finding", "fix"):
        table.add_column(column, overflow="fold")
    for result in results:
        style = styles[result.status]
        table.add_row(result.name, f"[{style}]{result.status}[/]", result.message, result.fix)
    Console().print(table)
    failed = [r.name for r in results if r.status == "fail"]
    if failed:
        err_console.print(f"{len(failed)} check(s) failed: {', '.join(failed)}")
        raise typer.Exit(1)


# --- end transparent capture commands ---


if __name__ == "__main__":
    app()
