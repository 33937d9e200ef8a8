"""Topology files: what they describe, and every mistake named (no root needed)."""

from __future__ import annotations

import pytest

from stack.lab.topology import TopologyError, parse

from tests.helpers.cli import assert_one_error, run_stack

GOOD = """
[hosts.client]
kind = "stack"
address = "198.51.100.2/24"
gateway = "198.51.100.1"
link = "lan"
impair = "loss=0.01"

[hosts.server]
address = "203.0.113.2/24"
gateway = "203.0.113.1"
link = "wan"
dns = { "www.example.test" = "203.0.113.2" }

[routers.r1]
interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }
nat = "wan"
mss_clamp = true
rules = ["tcp dport 81 drop"]
routes = { "192.0.2.0/24" = "203.0.113.9" }

[links.wan]
mtu = 1400
loss = 0.02
"""


def test_a_topology_names_its_hosts_routers_and_links():
    topo = parse(GOOD)
    assert topo.hosts["client"].kind == "stack" and topo.hosts["client"].ip == "198.51.100.2"
    assert topo.hosts["server"].kind == "kernel"  # the default
    assert topo.hosts["server"].dns == {"www.example.test": "203.0.113.2"}
    r1 = topo.routers["r1"]
    assert r1.nat == "wan" and r1.mss_clamp and r1.rules == ["tcp dport 81 drop"]
    assert r1.routes == {"192.0.2.0/24": "203.0.113.9"}
    assert topo.links["wan"].mtu == 1400 and topo.links["wan"].loss == 0.02
    assert topo.links["lan"].mtu == 1500  # a link named only by its nodes
    assert topo.on_link("lan") == ["client", "r1"]


@pytest.mark.parametrize("change, words", [
    (("[hosts.client]", "[hosts.Client]"), "hosts.Client: a name"),
    (('address = "198.51.100.2/24"', 'address = "198.51.100.2"'), "needs a prefix"),
    (('address = "198.51.100.2/24"', 'address = "198.51.100.0/24"'), "network or broadcast"),
    (('address = "198.51.100.2/24"', 'address = "198.51.100.1/24"'), "both have the address"),
    (('lan = "198.51.100.1/24"', 'lan = "198.51.101.1/24"'), "different subnets"),
    (('kind = "stack"', 'kind = "bsd"'), "kind 'bsd'"),
    (('nat = "wan"', 'nat = "dmz"'), "nat 'dmz' is not one of its links"),
    (("mtu = 1400", "mtu = 100"), "outside 576..9000"),
    (("loss = 0.02", "loss = 1.5"), "not a probability"),
    (("mss_clamp = true", 'mss_clamp = "yes"'), "mss_clamp has the wrong type"),
    (('gateway = "198.51.100.1"', 'gateway = "nowhere"'), "not an address"),
    (('link = "lan"', 'lnk = "lan"'), "unknown key 'lnk'"),
    (('[links.wan]', '[link.wan]'), "unknown section 'link'"),
    (('interfaces = { lan = "198.51.100.1/24", wan = "203.0.113.1/24" }',
      'interfaces = { lan = "198.51.100.1/24" }'), "two links at least"),
    (('"192.0.2.0/24" = "203.0.113.9"', '"192.0.2.0/33" = "x"'), "not a network"),
    (("[hosts.client]", "[hosts.client"), "topology: "),
    (("[hosts.client]", "[hosts.sw0]"), "the lab's own bridges"),
    (('"www.example.test" = "203.0.113.2"', '"www.example.test" = 5'), "dns takes strings"),
    (('"www.example.test" = "203.0.113.2"', '"www.example.test" = "nowhere"'),
     "'nowhere' is not an address"),
    (('gateway = "198.51.100.1"', 'gateway = "192.0.2.1"'), "is not on 198.51.100.0/24"),
    (('rules = ["tcp dport 81 drop"]', 'rules = [7]'), "rules are strings"),
    (('dns = {', 'dhcp = "zzz"\ndns = {'), "two addresses"),
    (('dns = {', 'dhcp = "203.0.113.60,203.0.113.50"\ndns = {'), "is not a range"),
])
def test_every_mistake_is_named(change, words):
    old, new = change
    assert old in GOOD
    with pytest.raises(TopologyError) as e:
        parse(GOOD.replace(old, new, 1))
    assert words in str(e.value), str(e.value)


def test_a_kernel_host_cannot_take_dhcp_or_the_stacks_impairments():
    with pytest.raises(TopologyError, match="only a stack host"):
        parse(GOOD.replace('address = "203.0.113.2/24"', 'address = "dhcp"'))
    with pytest.raises(TopologyError, match="impair is the stack's"):
        parse(GOOD.replace('link = "wan"\ndns', 'link = "wan"\nimpair = "loss=0.1"\ndns'))


def test_stack_lab_lists_its_lessons():
    r = run_stack("lab", "--list")
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()]
    for name in ("handshake", "refused", "closewait", "timewait", "mtu", "fragments", "nat",
                 "loss"):
        assert name in names


@pytest.mark.parametrize("args, words", [
    (("lab",), "LESSON"),
    (("lab", "nosuch"), "no lesson 'nosuch'"),
    (("lab", "--shell"), "--topology and --shell go together"),
    (("lab", "handshake", "--topology", "x.toml", "--shell"), "without a LESSON"),
])
def test_stack_lab_mistakes_are_one_line(args, words):
    assert_one_error(run_stack(*args), 2, words)
