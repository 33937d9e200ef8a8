"""A lab's topology, read from a small TOML file.

::

    # A stack host and a kernel server, one router between them.
    [hosts.client]
    kind = "stack"                    # "stack" (this stack) or "kernel"
    address = "198.51.100.2/24"
    gateway = "198.51.100.1"
    link = "lan"
    impair = "loss=0.02,seed=1"       # stack hosts: the stack's fault injector

    [hosts.server]
    address = "203.0.113.2/24"        # kind "kernel" is the default
    gateway = "203.0.113.1"
    link = "wan"
    dns = { "www.example.test" = "203.0.113.2" }   # dnsmasq answers these

    [routers.r1]
    interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }
    nat = "wan"                       # masquerade what leaves by this link
    mss_clamp = true                  # clamp the MSS of forwarded SYNs to the path
    routes = { "192.0.2.0/24" = "203.0.113.9" }   # more networks, by next hop
    rules = ["ip protocol icmp icmp type destination-unreachable drop"]  # nftables, forward

    [links.wan]
    mtu = 1400
    loss = 0.01                       # kernel side: nftables numgen random

A host sits on one link; a router joins two or more. Every name is short (it
becomes part of interface names). :func:`parse` checks everything it can
without building anything and raises :class:`TopologyError` with a message
that names the host, router or link.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

NAME = re.compile(r"[a-z][a-z0-9]{0,6}$")
KINDS = ("stack", "kernel")


class TopologyError(ValueError):
    """A topology that cannot be built, with what is wrong with it."""


@dataclass
class Link:
    name: str
    mtu: int = 1500
    loss: float = 0.0     # a kernel router's forwarded packets dropped at random (nftables)


@dataclass
class Host:
    name: str
    link: str
    address: str                      # CIDR, or "dhcp" for a stack host
    kind: str = "kernel"
    gateway: str | None = None
    impair: str | None = None         # stack hosts: stack up --impair
    dns: dict[str, str] = field(default_factory=dict)  # kernel hosts: names dnsmasq serves
    dhcp: str | None = None           # kernel hosts: dnsmasq hands out "FIRST,LAST"
    args: list[str] = field(default_factory=list)      # stack hosts: more stack up flags

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass
class Router:
    name: str
    interfaces: dict[str, str]        # link -> CIDR
    nat: str | None = None
    mss_clamp: bool = False
    rules: list[str] = field(default_factory=list)    # nftables; "output ..." for its own
    routes: dict[str, str] = field(default_factory=dict)  # network -> next hop


@dataclass
class Topology:
    hosts: dict[str, Host]
    routers: dict[str, Router]
    links: dict[str, Link]

    def node(self, name: str) -> Host | Router:
        if name in self.hosts:
            return self.hosts[name]
        return self.routers[name]

    def on_link(self, link: str) -> list[str]:
        """The nodes attached to ``link``, hosts first."""
        return ([h.name for h in self.hosts.values() if h.link == link]
                + [r.name for r in self.routers.values() if link in r.interfaces])


def load(path: str) -> Topology:
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError as e:
        raise TopologyError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TopologyError(f"{path} is not text") from None
    return parse(text, path)


def parse(text: str, where: str = "topology") -> Topology:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(f"{where}: {e}") from None
    unknown = set(doc) - {"hosts", "routers", "links"}
    if unknown:
        raise TopologyError(f"{where}: unknown section {sorted(unknown)[0]!r} "
                            "(hosts, routers, links)")
    links = {name: _link(name, spec) for name, spec in _table(doc, "links").items()}
    hosts = {name: _host(name, spec) for name, spec in _table(doc, "hosts").items()}
    routers = {name: _router(name, spec) for name, spec in _table(doc, "routers").items()}
    if not hosts:
        raise TopologyError(f"{where}: no hosts")
    names = list(hosts) + list(routers)
    if len(set(names)) != len(names):
        raise TopologyError(f"{where}: a host and a router share a name")
    for h in hosts.values():
        links.setdefault(h.link, Link(h.link))
    for r in routers.values():
        for link in r.interfaces:
            links.setdefault(link, Link(link))
    topo = Topology(hosts, routers, links)
    _check_subnets(topo)
    return topo


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise TopologyError(f"[{key}.NAME] sections expected")
    for name in value:
        if not NAME.match(name):
            raise TopologyError(f"{key}.{name}: a name is a lowercase letter, then up to 6 "
                                "letters or digits")
        if re.fullmatch(r"sw\d+", name):
            raise TopologyError(f"{key}.{name}: names sw0, sw1, ... are the lab's own bridges")
    return value


def _fields(what: str, spec: dict[str, Any], allowed: dict[str, type | tuple[type, ...]]
            ) -> dict[str, Any]:
    for key, value in spec.items():
        if key not in allowed:
            raise TopologyError(f"{what}: unknown key {key!r} ({', '.join(allowed)})")
        if not isinstance(value, allowed[key]) or isinstance(value, bool) != (
                allowed[key] is bool):
            raise TopologyError(f"{what}: {key} has the wrong type")
    return spec


def _cidr(what: str, text: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise TopologyError(f"{what}: {text!r} is not an IPv4 address with a prefix") from None
    if "/" not in text:
        raise TopologyError(f"{what}: {text!r} needs a prefix length, e.g. /24")
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise TopologyError(f"{what}: {text} is the network or broadcast address")
    return iface


def _link(name: str, spec: dict[str, Any]) -> Link:
    _fields(f"links.{name}", spec, {"mtu": int, "loss": (int, float)})
    link = Link(name, spec.get("mtu", 1500), float(spec.get("loss", 0.0)))
    if not 576 <= link.mtu <= 9000:
        raise TopologyError(f"links.{name}: mtu {link.mtu} is outside 576..9000")
    if not 0.0 <= link.loss < 1.0:
        raise TopologyError(f"links.{name}: loss {link.loss} is not a probability below 1")
    return link


def _host(name: str, spec: dict[str, Any]) -> Host:
    what = f"hosts.{name}"
    _fields(what, spec, {"kind": str, "link": str, "address": str, "gateway": str,
                         "impair": str, "dns": dict, "dhcp": str, "args": list})
    for key in ("link", "address"):
        if key not in spec:
            raise TopologyError(f"{what}: {key} is missing")
    host = Host(name, spec["link"], spec["address"], spec.get("kind", "kernel"),
                spec.get("gateway"), spec.get("impair"), dict(spec.get("dns", {})),
                spec.get("dhcp"), [str(a) for a in spec.get("args", [])])
    for key in ("dns", "args"):
        items = spec.get(key, {} if key == "dns" else [])
        values = list(items.values()) if key == "dns" else items
        if not all(isinstance(v, str) for v in values):
            raise TopologyError(f"{what}: {key} takes strings")
    for name, addrs in host.dns.items():
        for addr in addrs.split(","):
            try:
                ipaddress.IPv4Address(addr.strip())
            except ValueError:
                raise TopologyError(f"{what}: dns {name}: {addr.strip()!r} is not an "
                                    "address") from None
    if host.kind not in KINDS:
        raise TopologyError(f"{what}: kind {host.kind!r} is not one of {', '.join(KINDS)}")
    if host.address == "dhcp":
        if host.kind != "stack":
            raise TopologyError(f"{what}: only a stack host takes its address by DHCP")
    else:
        _cidr(what, host.address)
    if host.gateway is not None:
        try:
            ipaddress.IPv4Address(host.gateway)
        except ValueError:
            raise TopologyError(f"{what}: gateway {host.gateway!r} is not an address") from None
    if host.kind == "kernel" and host.impair:
        raise TopologyError(f"{what}: impair is the stack's; give the link a loss instead")
    if host.address != "dhcp":
        net = ipaddress.IPv4Interface(host.address).network
        if host.gateway is not None and ipaddress.IPv4Address(host.gateway) not in net:
            raise TopologyError(f"{what}: gateway {host.gateway} is not on {net}")
        if host.dhcp is not None:
            ends = host.dhcp.split(",")
            try:
                first, last = (ipaddress.IPv4Address(e.strip()) for e in ends)
            except ValueError:
                raise TopologyError(f"{what}: dhcp is \"FIRST,LAST\", two addresses") from None
            if first not in net or last not in net or first > last:
                raise TopologyError(f"{what}: dhcp range {host.dhcp} is not a range in {net}")
    return host


def _router(name: str, spec: dict[str, Any]) -> Router:
    what = f"routers.{name}"
    _fields(what, spec, {"interfaces": dict, "nat": str, "mss_clamp": bool, "rules": list,
                         "routes": dict})
    ifaces = spec.get("interfaces", {})
    if len(ifaces) < 2:
        raise TopologyError(f"{what}: a router needs interfaces on two links at least")
    for link, cidr in ifaces.items():
        if not isinstance(cidr, str):
            raise TopologyError(f"{what}: interfaces.{link} is not an address")
        _cidr(f"{what}.interfaces.{link}", cidr)
    if not all(isinstance(rule, str) for rule in spec.get("rules", [])):
        raise TopologyError(f"{what}: rules are strings (nftables rules)")
    router = Router(name, dict(ifaces), spec.get("nat"), spec.get("mss_clamp", False),
                    [str(r) for r in spec.get("rules", [])], dict(spec.get("routes", {})))
    for net, via in router.routes.items():
        try:
            ipaddress.IPv4Network(net)
            ipaddress.IPv4Address(via)
        except ValueError:
            raise TopologyError(f"{what}: routes: {net} via {via} is not a network and an "
                                "address") from None
    if router.nat is not None and router.nat not in ifaces:
        raise TopologyError(f"{what}: nat {router.nat!r} is not one of its links")
    return router


def _check_subnets(topo: Topology) -> None:
    """Every address on a link lies in one subnet, and no address is used twice."""
    seen: dict[str, str] = {}
    for link in topo.links:
        nets = set()
        for name in topo.on_link(link):
            node = topo.node(name)
            text = node.address if isinstance(node, Host) else node.interfaces[link]
            if text == "dhcp":
                continue
            iface = ipaddress.IPv4Interface(text)
            nets.add(iface.network)
            ip = str(iface.ip)
            if ip in seen:
                raise TopologyError(f"{name} and {seen[ip]} both have the address {ip}")
            seen[ip] = name
        if len(nets) > 1:
            raise TopologyError(f"links.{link}: its nodes are on different subnets "
                                f"({', '.join(sorted(map(str, nets)))})")
