"""The lesson on names: DNS through dnsmasq over UDP, a truncated answer
retried over TCP, NXDOMAIN, and a dead first server."""

from __future__ import annotations

import json

from stack.lab import evidence as ev
from stack.lab.lab import Lab
from stack.lab.lessons import Report, lesson

BIG = ",".join(f"203.0.113.{i}" for i in range(10, 50))   # 40 addresses: over 512 bytes

RESOLVING = f"""
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
link = "lan"
args = ["--dns", "198.51.100.9", "--dns", "198.51.100.1"]

[hosts.dead]
address = "198.51.100.9/24"       # up, but no DNS server: its kernel answers port unreachable
link = "lan"

[hosts.dns]
address = "198.51.100.1/24"
link = "lan"
dns = {{ "www.example.test" = "198.51.100.1", "big.example.test" = "{BIG}" }}
"""

LOOKUPS = """
import json, socket
out = {}
for name in ("www.example.test", "big.example.test", "nosuch.example.test"):
    try:
        out[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, proto=6)})
    except socket.gaierror as e:
        out[name] = f"gaierror {e.args[0]}"
print(json.dumps(out))
"""


@lesson("dns", "DNS: over UDP, truncated and retried over TCP, NXDOMAIN, a dead server",
        RESOLVING)
def dns(lab: Lab) -> Report:
    got = lab.stack_run("client", "dns", LOOKUPS, timeout=40).stdout
    try:
        answers = json.loads([x for x in got.splitlines() if x.startswith("{")][-1])
    except (IndexError, ValueError):
        answers = {}
    r = Report(
        "A program over the stack looks up three names with getaddrinfo(). The stack's "
        "resolver asks its first server, 198.51.100.9, over UDP: that host runs no DNS "
        "server, its kernel answers ICMP port unreachable, and the resolver moves on to the "
        "second, dnsmasq at 198.51.100.1. www.example.test comes back in one UDP "
        "datagram. big.example.test has 40 addresses, more than fit in the 512 bytes a "
        "UDP answer may carry without EDNS: dnsmasq sends what fits with the TC (truncated) "
        "bit set and the resolver asks again over TCP, which has no such limit. "
        "nosuch.example.test does not exist: NXDOMAIN (rcode 3), which getaddrinfo "
        "reports as EAI_NONAME.",
        ["dns.jsonl: the dns layer's query, unreachable and answer events "
         "(stack trace --format text dns.jsonl | grep dns)",
         "dns.pcap: UDP to port 53, the ICMP port unreachable from .9, the TCP connection "
         "to port 53", "dns-dnsmasq.log: what dnsmasq was asked"])
    trace = ev.trace(f"{lab.out}/dns.jsonl")
    r.check("www.example.test resolved", answers.get("www.example.test") == ["198.51.100.1"],
            answers.get("www.example.test"))
    dead = list(ev.events(trace, "dns", "unreachable"))
    r.check("the dead first server answered port unreachable, and the second was asked",
            bool(dead) and any(e.get("server") == "198.51.100.1"
                               for e in ev.events(trace, "dns", "answer")), len(dead))
    truncated = [e for e in ev.events(trace, "dns", "answer", name="big.example.test")
                 if e.get("truncated")]
    over_tcp = [e for e in ev.events(trace, "dns", "answer", name="big.example.test",
                                     via="tcp")]
    r.check("big.example.test: truncated over UDP, then answered over TCP",
            bool(truncated) and bool(over_tcp) and over_tcp[0].get("answers") == 40,
            f"{len(truncated)} truncated, {[e.get('answers') for e in over_tcp]} over TCP")
    r.check("all 40 addresses came back", len(answers.get("big.example.test", [])) == 40,
            len(answers.get("big.example.test", [])))
    nx = [e for e in ev.events(trace, "dns", "answer", name="nosuch.example.test")]
    r.check("nosuch.example.test: NXDOMAIN, and getaddrinfo said EAI_NONAME",
            bool(nx) and nx[0].get("rcode") == 3
            and answers.get("nosuch.example.test") == "gaierror -2",
            answers.get("nosuch.example.test"))
    return r
