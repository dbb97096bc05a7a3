"""Would the proxy's own upstream connections be redirected back into the proxy?

In transparent mode a NAT rule sends a client's outbound port-443 connections to the proxy;
the proxy then opens its own connection to the real server, also to port 443. If the rule
matches that connection too, the proxy receives its own traffic, opens another connection,
receives that, and so on until it runs out of file descriptors: a redirect loop. The recipes
exclude the proxy by the user it runs as (`-m owner ! --uid-owner`, nft `meta skuid !=`).

This module answers the question from the rules as `iptables-save -t nat` and
`nft list ruleset` print them, by walking the nat OUTPUT chains (and the chains they jump to)
with the proxy's connection as the packet: TCP, its uid and gid, destination port 443 or 80,
no firewall mark. Conditions it can evaluate decide; conditions it cannot (destination
addresses, interfaces, cgroups) make a finding "uncertain" rather than silent. PREROUTING
rules are not walked: locally created connections never traverse them, so a proxy on a
gateway or in a router namespace cannot loop through them.
"""

import grp
import pwd
import re
import shlex
from dataclasses import dataclass
from typing import Literal

Match = bool | None  # True: matches; False: does not; None: cannot tell


@dataclass(frozen=True)
class ProxyConnection:
    """The packet that opens the proxy's own connection to an upstream server."""

    uid: int
    gid: int
    dport: int = 443
    mark: int = 0


@dataclass(frozen=True)
class LoopFinding:
    source: str  # "iptables" or "nftables"
    rule: str  # the rule as printed
    certain: bool  # False when some condition on the path could not be evaluated


@dataclass
class _Rule:
    text: str
    match: Match
    verdict: str  # "redirect", "return", "accept", "jump", "goto", "other"
    to_port: int | None = None
    target_chain: str | None = None


# "continue": the chain ended or returned, its caller goes on; "accept": the nat table lets the
# connection go unchanged; "redirected": a rule rewrote its destination.
_Outcome = Literal["continue", "accept", "redirected"]


def _walk(
    chains: dict[str, list[_Rule]],
    chain: str,
    proxy_port: int,
    certain: bool,
    source: str,
    findings: list[LoopFinding],
    depth: int = 0,
) -> _Outcome:
    if depth > 16 or chain not in chains:
        return "continue"
    for rule in chains[chain]:
        if rule.match is False:
            continue
        sure = certain and rule.match is True
        if rule.verdict == "redirect":
            if rule.to_port == proxy_port:
                findings.append(LoopFinding(source, rule.text, sure))
            if rule.match is True:
                return "redirected"
        elif rule.verdict in ("return", "accept"):
            if rule.match is True:
                return "accept" if rule.verdict == "accept" else "continue"
        elif rule.verdict in ("jump", "goto") and rule.target_chain:
            outcome = _walk(chains, rule.target_chain, proxy_port, sure, source, findings, depth + 1)
            if rule.match is True and (outcome != "continue" or rule.verdict == "goto"):
                return outcome
        else:
            continue
        # A terminal rule that may or may not have matched: what follows may never be reached.
        certain = certain and rule.match is True
    return "continue"


def _uid(value: str) -> int | None:
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        return None


def _gid(value: str) -> int | None:
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        return None


def _in_range(value: int, spec: str, lookup=lambda s: int(s) if s.isdigit() else None) -> Match:
    """`spec` is "N", "A-B" or "A:B" (names allowed through `lookup`, "llm-shadow" too)."""
    whole = lookup(spec)
    if whole is not None:
        return value == whole
    parts = re.split(r"[-:]", spec, maxsplit=1)
    low, high = lookup(parts[0]), lookup(parts[-1])
    if low is None or high is None:
        return None
    return low <= value <= high


def _all(matches: list[Match]) -> Match:
    if any(m is False for m in matches):
        return False
    if any(m is None for m in matches):
        return None
    return True


# --- iptables-save ---------------------------------------------------------------------------

_IPT_SKIP_OPTIONS = {"-m", "--match", "--comment", "-c", "--set-counters"}
_IPT_BUILTIN_TARGETS = {"MASQUERADE", "SNAT", "LOG", "MARK", "CONNMARK", "DROP", "REJECT", "NETMAP", "TPROXY"}


def _ipt_rule(text: str, conn: ProxyConnection) -> tuple[str, _Rule]:
    tokens = shlex.split(text)
    chain = tokens[1]
    matches: list[Match] = []
    verdict, to_port, target_chain = "other", None, None
    i, negate = 2, False
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate, i = True, i + 1
            continue
        args = []
        j = i + 1
        while (
            j < len(tokens) and (not tokens[j].startswith("-") or re.fullmatch(r"-\d+", tokens[j])) and tokens[j] != "!"
        ):
            args.append(tokens[j])
            j += 1
        value = args[0] if args else ""
        result: Match | str = "skip"
        if token in _IPT_SKIP_OPTIONS:
            pass
        elif token in ("-p", "--protocol"):
            result = value.lower() in ("tcp", "6", "all")
        elif token in ("--dport", "--destination-port"):
            result = _in_range(conn.dport, value)
        elif token in ("--dports", "--destination-ports"):
            result = any(_in_range(conn.dport, part) for part in value.split(","))
        elif token == "--uid-owner":
            result = _in_range(conn.uid, value, _uid)
        elif token == "--gid-owner":
            result = _in_range(conn.gid, value, _gid)
        elif token == "--mark":
            mark, _, mask = value.partition("/")
            mask_value = int(mask, 0) if mask else 0xFFFFFFFF
            result = (conn.mark & mask_value) == int(mark, 0)
        elif token in ("-j", "--jump", "-g", "--goto"):
            if value in ("REDIRECT", "DNAT"):
                verdict = "redirect"
            elif value in ("RETURN", "ACCEPT"):
                verdict = value.lower()
            elif value not in _IPT_BUILTIN_TARGETS:
                verdict = "jump" if token in ("-j", "--jump") else "goto"
                target_chain = value
        elif token == "--to-ports":
            to_port = int(re.split(r"[-:]", value)[0])
        elif token == "--to-destination":
            port = value.rsplit(":", 1)[1] if ":" in value.lstrip("[") else ""
            to_port = int(re.split(r"-", port)[0]) if port.split("-")[0].isdigit() else None
        elif token.startswith("-"):
            result = None  # a condition this module does not evaluate (-d, -o, --cgroup, ...)
        if result != "skip":
            matches.append((not result) if (negate and result is not None) else result)  # type: ignore[arg-type]
        negate = False
        i = j
    if verdict == "redirect" and to_port is None and "REDIRECT" in tokens:
        to_port = conn.dport  # REDIRECT without --to-ports keeps the destination port
    return chain, _Rule(text, _all(matches), verdict, to_port, target_chain)


def iptables_loop_findings(save_text: str, proxy_port: int, conn: ProxyConnection) -> list[LoopFinding]:
    """Rules in `iptables-save -t nat` output that redirect the proxy's connection to it."""
    chains: dict[str, list[_Rule]] = {}
    in_nat = False
    for line in save_text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif in_nat and line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        elif in_nat and line.startswith("-A "):
            chain, rule = _ipt_rule(line, conn)
            chains.setdefault(chain, []).append(rule)
    findings: list[LoopFinding] = []
    _walk(chains, "OUTPUT", proxy_port, True, "iptables", findings)
    return findings


# --- nft list ruleset ------------------------------------------------------------------------


def _nft_values(tokens: list[str], i: int) -> tuple[list[str], int]:
    """Read one value or a `{ a, b }` set starting at tokens[i]; return values and next index."""
    if i < len(tokens) and tokens[i] == "{":
        values: list[str] = []
        i += 1
        while i < len(tokens) and tokens[i] != "}":
            values.extend(v for v in tokens[i].split(",") if v)
            i += 1
        return values, i + 1
    return ([tokens[i]] if i < len(tokens) else []), i + 1


def _nft_compare(tokens: list[str], i: int, actual: int | str, lookup) -> tuple[Match, int]:
    negate = False
    if i < len(tokens) and tokens[i] in ("!=", "=="):
        negate, i = tokens[i] == "!=", i + 1
    values, i = _nft_values(tokens, i)
    if isinstance(actual, str):
        result: Match = actual in [v.lower() for v in values]
    else:
        results = [_in_range(actual, v, lookup) for v in values]
        result = True if any(r is True for r in results) else (None if any(r is None for r in results) else False)
    if negate and result is not None:
        result = not result
    return result, i


def _nft_rule(text: str, conn: ProxyConnection) -> _Rule:
    tokens = text.replace("{", " { ").replace("}", " } ").replace(",", " , ").split()
    tokens = [t for t in tokens if t != ","]
    matches: list[Match] = []
    verdict, to_port, target_chain = "other", None, None
    i = 0
    number = lambda s: int(s, 0) if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", s) else None  # noqa: E731
    while i < len(tokens) and verdict == "other":
        token = tokens[i]
        if token == "meta" or token == "ct":
            i += 1
            continue
        if token in ("skuid", "skgid"):
            actual, lookup = (conn.uid, _uid) if token == "skuid" else (conn.gid, _gid)
            result, i = _nft_compare(tokens, i + 1, actual, lookup)
            matches.append(result)
        elif token in ("tcp", "udp") and i + 1 < len(tokens) and tokens[i + 1] in ("dport", "sport"):
            if token == "udp":
                matches.append(False)
                _, i = _nft_values(tokens, i + 2)
            elif tokens[i + 1] == "dport":
                result, i = _nft_compare(tokens, i + 2, conn.dport, number)
                matches.append(result)
            else:
                matches.append(None)
                _, i = _nft_values(tokens, i + 2)
        elif token in ("l4proto", "protocol"):
            result, i = _nft_compare(tokens, i + 1, "tcp", None)
            matches.append(result)
        elif token == "mark":
            result, i = _nft_compare(tokens, i + 1, conn.mark, number)
            matches.append(result)
        elif token == "counter":
            i += 1
            while i + 1 < len(tokens) and tokens[i] in ("packets", "bytes"):
                i += 2
        elif token == "comment":
            i += 2
        elif token == "redirect":
            verdict = "redirect"
            port = tokens[i + 2] if i + 2 < len(tokens) and tokens[i + 1] == "to" else ""
            to_port = number(port.lstrip(":")) if port else conn.dport
        elif token == "dnat":
            verdict = "redirect"
            rest = tokens[i + 1 : i + 4]
            address = next((t for t in rest if ":" in t or t.isdigit()), "")
            to_port = number(address.rsplit(":", 1)[-1]) if ":" in address else None
        elif token in ("return", "accept"):
            verdict = token
        elif token in ("jump", "goto") and i + 1 < len(tokens):
            verdict, target_chain = token, tokens[i + 1]
        elif token in ("drop", "reject", "masquerade", "snat", "log"):
            verdict = "other"
            break
        else:
            matches.append(None)  # ip daddr, oifname, socket cgroupv2, ...: not evaluated
            i += 1
            # skip the operands of the unknown expression up to the next keyword we know
            while i < len(tokens) and tokens[i] not in _NFT_KEYWORDS:
                i += 1
    return _Rule(text, _all(matches), verdict, to_port, target_chain)


_NFT_KEYWORDS = {
    "meta",
    "ct",
    "skuid",
    "skgid",
    "tcp",
    "udp",
    "l4proto",
    "protocol",
    "mark",
    "counter",
    "comment",
    "redirect",
    "dnat",
    "return",
    "accept",
    "jump",
    "goto",
    "drop",
    "reject",
    "masquerade",
    "snat",
    "log",
    "ip",
    "ip6",
    "oifname",
    "iifname",
    "socket",
}


def nft_loop_findings(ruleset_text: str, proxy_port: int, conn: ProxyConnection) -> list[LoopFinding]:
    """Rules in `nft list ruleset` output that redirect the proxy's connection to it."""
    findings: list[LoopFinding] = []
    tables: dict[str, dict[str, list[_Rule]]] = {}
    entry_chains: list[tuple[str, str]] = []
    table = chain = None
    for raw in ruleset_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("table "):
            table = " ".join(line.split()[1:3])
            tables.setdefault(table, {})
        elif line.startswith("chain ") and table is not None:
            chain = line.split()[1]
            tables[table].setdefault(chain, [])
        elif line == "}":
            if chain is not None:
                chain = None
            else:
                table = None
        elif table is not None and chain is not None:
            if line.startswith("type "):
                if re.search(r"\btype nat hook output\b", line):
                    entry_chains.append((table, chain))
            elif not line.startswith("policy "):
                tables[table][chain].append(_nft_rule(line, conn))
    for table_name, chain_name in entry_chains:
        _walk(tables[table_name], chain_name, proxy_port, True, "nftables", findings)
    return findings
