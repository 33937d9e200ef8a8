"""Lessons on the network layer: routing, TTL and traceroute through three
routers, and an address from DHCP."""

from __future__ import annotations

from stack.lab import evidence as ev
from stack.lab.lab import Lab
from stack.lab.lessons import Report, lesson

THREE_HOPS = """
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"

[hosts.server]
address = "203.0.113.2/24"
gateway = "203.0.113.1"
link = "wan"

[routers.r1]
interfaces = { lan = "198.51.100.1/24", a = "192.0.2.1/26" }
routes = { "192.0.2.64/26" = "192.0.2.2", "203.0.113.0/24" = "192.0.2.2" }

[routers.r2]
interfaces = { a = "192.0.2.2/26", b = "192.0.2.65/26" }
routes = { "198.51.100.0/24" = "192.0.2.1", "203.0.113.0/24" = "192.0.2.66" }

[routers.r3]
interfaces = { b = "192.0.2.66/26", wan = "203.0.113.1/24" }
routes = { "198.51.100.0/24" = "192.0.2.65", "192.0.2.0/26" = "192.0.2.65" }
"""

HOPS = ["198.51.100.1", "192.0.2.2", "192.0.2.66", "203.0.113.2"]


def _hops(text: str) -> list[str]:
    """The first address of each hop line of traceroute -n's output ('*' for none)."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0].isdigit():
            out.append(next((w for w in words[1:] if w.count(".") == 3), "*"))
    return out


@lesson("traceroute", "Routing, TTL and traceroute through three routers", THREE_HOPS)
def traceroute(lab: Lab) -> Report:
    lab.stack_up("client", "ttl")
    ping = lab.sh("server", "ping -c 1 -W 2 198.51.100.2").stdout
    lab.stack_down("client")
    first = lab.stack_tool("client", "traceroute", "traceroute",
                           ["-w", "1", "-q", "2", "203.0.113.2"], timeout=60)
    lab.nft("r2", "output icmp type time-exceeded drop")
    second = lab.stack_tool("client", "traceroute-filtered", "traceroute",
                            ["-w", "1", "-q", "2", "203.0.113.2"], timeout=60)
    with open(f"{lab.out}/ttl-ping.txt", "w") as f:
        f.write(ping)
    r = Report(
        "Every router on the way takes one from a packet's TTL, so the kernel server's echo "
        "request, sent with TTL 64, reaches the stack with 61 after three routers; the "
        "stack's reply arrives with 61 too. traceroute turns that into a map: it sends UDP "
        "probes with TTL 1, 2, 3, ... Each router that brings a TTL to 0 drops the probe "
        "and sends ICMP time exceeded from its own address, which names the hop; the server "
        "itself answers port unreachable (nobody listens on port 33434 and up), which ends "
        "the trace. When r2 stops sending time exceeded, as many firewalls do, its hop "
        "shows as '*' and the trace goes on past it.",
        ["traceroute.log and traceroute-filtered.log: the two traces as traceroute -n prints "
         "them", "traceroute.pcap: probes with TTL 1, 2, 3, 4 and the ICMP answers",
         "ttl.pcap: the echo request arrived with TTL 61; ttl-ping.txt: ping's ttl=61"])
    shown = _hops(first.stdout)
    r.check("traceroute listed r1, r2, r3 and the server in order", shown == HOPS, shown)
    pkts = ev.pcap(f"{lab.out}/traceroute.pcap")
    exceeded = [p.src for p in pkts if p.icmp == (11, 0)]
    r.check("each router answered time exceeded from its own address",
            all(hop in exceeded for hop in HOPS[:3]), sorted(set(exceeded)))
    r.check("the server answered port unreachable",
            any(p.icmp == (3, 3) and p.src == "203.0.113.2" for p in pkts), "")
    filtered = _hops(second.stdout)
    r.check("with r2 filtering, its hop is '*' and the trace goes on",
            filtered == [HOPS[0], "*", HOPS[2], HOPS[3]], filtered)
    request = [p for p in ev.pcap(f"{lab.out}/ttl.pcap") if p.icmp == (8, 0)]
    r.check("the echo request arrived with TTL 64 - 3 = 61", bool(request) and request[0].ttl == 61,
            request[0].ttl if request else None)
    r.check("the reply reached the server with TTL 61", "ttl=61" in ping,
            next((line for line in ping.splitlines() if "ttl=" in line), "no reply"))
    return r


LEASED = """
[hosts.client]
kind = "stack"
address = "dhcp"
link = "lan"

[hosts.server]
address = "198.51.100.1/24"
link = "lan"
dhcp = "198.51.100.50,198.51.100.60"   # dnsmasq hands out these
gateway = "198.51.100.1"               # ... and names this router, and itself for DNS
dns = { "server.example.test" = "198.51.100.1" }
"""


@lesson("dhcp", "DHCP: the stack gets its address, gateway and DNS server", LEASED)
def dhcp(lab: Lab) -> Report:
    lab.stack_up("client", "dhcp")
    with open(f"{lab.out}/dhcp.log") as f:   # "stack: up ... address=A/N ...", once bound
        up = next((line for line in f if line.startswith("stack: up")), "")
    leased = next((w[len("address="):] for w in up.split() if w.startswith("address=")), "")
    ping = lab.sh("server", f"ping -c 1 -W 2 {leased.split('/')[0] or '198.51.100.50'}")
    lab.stack_down("client")
    trace = ev.trace(f"{lab.out}/dhcp.jsonl")
    bound = list(ev.events(trace, "dhcp", "bound"))
    address = bound[0]["address"].split("/")[0] if bound else ""
    r = Report(
        "The stack started with no address. It broadcast a DHCPDISCOVER from 0.0.0.0 to "
        "255.255.255.255 (UDP port 68 to 67); dnsmasq offered an address from its range "
        "(DHCPOFFER); the stack asked for it (DHCPREQUEST, still broadcast, so that other "
        "servers see which offer won) and dnsmasq confirmed it (DHCPACK) with the subnet "
        "mask, the router and the DNS server. Only then did the stack take the address, and "
        "the kernel could ping it. It would renew the lease half way through (T1); at exit "
        "it gave the address back (DHCPRELEASE).",
        ["dhcp.jsonl: the dhcp layer's send, receive, state and bound events "
         "(stack trace --layer dhcp dhcp.jsonl)",
         "dhcp.pcap: the four messages, then the release", "server-leases: dnsmasq's leases"])
    sent = [e["message"] for e in ev.events(trace, "dhcp", "send")]
    got = [e["message"] for e in ev.events(trace, "dhcp", "receive")]
    r.check("DISCOVER, OFFER, REQUEST, ACK in that order",
            sent[:2] == ["DISCOVER", "REQUEST"] and got[:2] == ["OFFER", "ACK"],
            f"sent {sent}, received {got}")
    lease = bound[0] if bound else {}
    r.check("bound to an address from the range, with the router and the DNS server",
            address.startswith("198.51.100.") and 50 <= int(address.split(".")[-1] or 0) <= 60
            and lease.get("router") == "198.51.100.1" and lease.get("dns") == ["198.51.100.1"],
            lease)
    r.check("the kernel pinged the leased address",
            ping.returncode == 0 and leased.split("/")[0] == address, leased)
    r.check("the address was given back at exit", sent[-1:] == ["RELEASE"], sent[-1:])
    return r
