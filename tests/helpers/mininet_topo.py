"""Run as a script (by tests/lab/test_mininet_tap.py, in a namespace of its
own): a topology built by Mininet itself, the way a Mininet user writes one,
with this stack as one host (``StackHost``). A kernel host two links away
fetches from the stack's HTTP service through a Linux router. Prints curl's
result and leaves the stack's trace and capture in the folder given."""

from __future__ import annotations

import sys

from stack.lab.build import make_stack_host_class, mininet

out = sys.argv[1]
mn = mininet()
StackHost = make_stack_host_class()


class RouterHost(mn.node.Host):
    def config(self, **params):
        r = super().config(**params)
        self.cmd("sysctl -qw net.ipv4.ip_forward=1")
        return r


class Topo(mn.topo.Topo):
    def build(self):
        web = self.addHost("web", cls=StackHost, ip=None)
        user = self.addHost("user", ip="203.0.113.2/24", defaultRoute="via 203.0.113.1")
        router = self.addHost("r0", cls=RouterHost, ip="198.51.100.1/24")
        s1, s2 = self.addSwitch("s1"), self.addSwitch("s2")
        self.addLink(web, s1)
        self.addLink(router, s1, intfName1="r0-eth0", params1={"ip": "198.51.100.1/24"})
        self.addLink(router, s2, intfName1="r0-eth1", params1={"ip": "203.0.113.1/24"})
        self.addLink(user, s2)


net = mn.net.Mininet(topo=Topo(), switch=mn.nodelib.LinuxBridge, controller=None)
net.start()
try:
    web = net["web"]
    web.stack_up("198.51.100.2/24", f"{out}/web.log", gateway="198.51.100.1",
                 flags=["--serve", "http:80", "--trace", f"{out}/web.jsonl",
                        "--pcap", f"{out}/web.pcap"])
    print(net["user"].cmd("curl -s -o /dev/null -w 'curl %{http_code} %{size_download}' "
                          "--max-time 10 http://198.51.100.2/bytes/100000"), flush=True)
    web.stack_down()
finally:
    net.stop()
