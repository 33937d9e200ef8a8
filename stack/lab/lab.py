"""A running lab: a :class:`~stack.lab.topology.Topology` built on Mininet
(:mod:`stack.lab.build`), with the calls a lesson's scenario makes.

``with Lab(topo, out) as lab:`` builds everything and tears everything down
on the way out, failure or not. In between:

* ``lab.sh(node, "ping -c1 203.0.113.2")`` runs a shell command in a node;
* ``lab.start(node, argv)`` starts a background program there (stopped at
  the end), e.g. a kernel server;
* ``lab.stack_up(host, ...)`` / ``lab.stack_run(host, program, ...)`` run this
  stack in a stack host, its trace and capture under ``out`` named by step;
* every router interface is captured (``out/ROUTER-LINK.pcap``) from the start.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import subprocess
import time
from typing import Any

from stack.lab.build import LabError, Stopper, finish, make_stack_host_class, mininet, must
from stack.lab.topology import Host, Router, Topology


class Lab:
    def __init__(self, topo: Topology, out: str, stack_flags: list[str] | None = None) -> None:
        self.topo = topo
        self.out = out
        self.stack_flags = list(stack_flags or [])   # given to every stack (e.g. --msl)
        self.net: Any = None
        self.bg = Stopper()
        os.makedirs(out, exist_ok=True)

    # ---- building -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def build(self) -> None:
        mn = mininet()
        topo = self.topo
        stack_host = make_stack_host_class()
        net = self.net = mn.net.Mininet(switch=mn.nodelib.LinuxBridge, controller=None,
                                        build=False, autoSetMacs=False, waitConnected=False)
        for h in topo.hosts.values():
            net.addHost(h.name, cls=stack_host if h.kind == "stack" else mn.node.Host, ip=None)
        for r in topo.routers.values():
            net.addHost(r.name, cls=mn.node.Host, ip=None)
        for i, link in enumerate(topo.links):
            sw = net.addSwitch(f"sw{i}")
            for node in topo.on_link(link):
                net.addLink(node, sw, intfName1=f"{node}-{link}")
        net.build()
        net.start()
        for i, spec in enumerate(topo.links.values()):
            self._mtu(f"sw{i}", spec.mtu)
        for h in topo.hosts.values():
            if h.kind == "kernel":
                self._kernel_host(h)
        for r in topo.routers.values():
            self._router(r)

    def _mtu(self, switch: str, mtu: int) -> None:
        """Both ends of every veth on a link's bridge."""
        for intf in self.net[switch].intfList():
            if intf.link is None:
                continue
            for end in (intf.link.intf1, intf.link.intf2):
                end.node.cmd(f"ip link set dev {end.name} mtu {mtu}")

    def _quiet(self, node: Any) -> None:
        """No IPv6 (its router solicitations would only add noise to the captures)."""
        node.cmd("for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 > $f; done")

    def _kernel_host(self, h: Host) -> None:
        node = self.net[h.name]
        self._quiet(node)
        intf = f"{h.name}-{h.link}"
        must(node, f"ip addr add {h.address} dev {intf}")
        must(node, f"ip link set {intf} up")
        if h.gateway and h.gateway != h.ip:  # (a DHCP server may name itself the router)
            must(node, f"ip route add default via {h.gateway}")
        if h.dns or h.dhcp:
            self._dnsmasq(h, intf)

    def _dnsmasq(self, h: Host, intf: str) -> None:
        argv = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--bind-interfaces", f"--interface={intf}", "--except-interface=lo",
                f"--pid-file={self.out}/{h.name}-dnsmasq.pid", "--log-queries",
                f"--log-facility={self.out}/{h.name}-dnsmasq.log"]
        for name, value in h.dns.items():
            for addr in value.split(","):
                argv.append(f"--host-record={name},{addr.strip()}")
        for domain in sorted({name.split(".", 1)[1] for name in h.dns if "." in name}):
            argv.append(f"--local=/{domain}/")  # other names there: NXDOMAIN
        if not h.dns:
            argv.append("--port=0")
        if h.dhcp:
            net = ipaddress.IPv4Interface(h.address).network
            argv += [f"--dhcp-range={h.dhcp},{net.netmask},2m", "--no-ping",
                     f"--dhcp-leasefile={self.out}/{h.name}-leases",
                     f"--dhcp-option=6,{h.ip}"]
            if h.gateway:
                argv.append(f"--dhcp-option=3,{h.gateway}")
        proc = self.start(h.name, argv, f"{h.name}-dnsmasq.out")
        time.sleep(0.2)
        if proc.poll() is not None:
            with open(f"{self.out}/{h.name}-dnsmasq.out", errors="replace") as f:
                raise LabError(f"{h.name}: dnsmasq did not start: {f.read().strip()[-300:]}")

    def _router(self, r: Router) -> None:
        node = self.net[r.name]
        self._quiet(node)
        must(node, "sysctl -qw net.ipv4.ip_forward=1")
        for link, cidr in r.interfaces.items():
            must(node, f"ip addr add {cidr} dev {r.name}-{link}")
            must(node, f"ip link set {r.name}-{link} up")
        for net, via in r.routes.items():
            must(node, f"ip route add {net} via {via}")
        must(node, f"nft -f {self._ruleset(r)}")
        for link in r.interfaces:
            intf = f"{r.name}-{link}"
            self.start(r.name, ["tcpdump", "-q", "-n", "-U", "--immediate-mode", "-i", intf, "-w",
                                f"{self.out}/{intf}.pcap"], f"{intf}-tcpdump.out")

    def _ruleset(self, r: Router) -> str:
        """The router's nftables rules: loss on its links, the lesson's rules,
        MSS clamping and NAT. Written to ``out`` for the learner to read."""
        forward = []
        for link in r.interfaces:
            loss = self.topo.links[link].loss
            if loss:
                forward.append(f'iifname "{r.name}-{link}" numgen random mod 10000 < '
                               f"{round(loss * 10000)} counter drop")
        forward += [rule for rule in r.rules if not rule.startswith("output ")]
        if r.mss_clamp:
            forward.append("tcp flags syn tcp option maxseg size set rt mtu")
        output = [rule[len("output "):] for rule in r.rules if rule.startswith("output ")]
        lines = ["table ip lab {",
                 "  chain forward {", "    type filter hook forward priority 0; policy accept;",
                 *[f"    {rule}" for rule in forward], "  }",
                 "  chain output {", "    type filter hook output priority 0; policy accept;",
                 *[f"    {rule}" for rule in output], "  }"]
        if r.nat:
            lines += ["  chain postrouting {",
                      "    type nat hook postrouting priority 100; policy accept;",
                      f'    oifname "{r.name}-{r.nat}" masquerade', "  }"]
        lines.append("}")
        path = f"{self.out}/{r.name}.nft"
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # ---- what a scenario does -------------------------------------------------------------

    def node(self, name: str) -> Any:
        return self.net[name]

    def nft(self, router: str, rule: str) -> None:
        """Add one rule to a router's ``lab`` table ("forward ..." or "output ...")."""
        chain, _, text = rule.partition(" ")
        must(self.node(router), f"nft add rule ip lab {chain} {text}")

    def sh(self, name: str, cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """A shell command in a node, to its end (killed after ``timeout``)."""
        return self.run(name, ["sh", "-c", cmd], timeout)

    def run(self, name: str, argv: list[str], timeout: float = 30.0
            ) -> subprocess.CompletedProcess[str]:
        """A program in a node, to its end (killed after ``timeout``)."""
        proc = self.node(name).popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        return finish(proc, argv, timeout)

    def start(self, name: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        """A program in the background in a node (stopped by :meth:`stop`)."""
        with open(os.path.join(self.out, log), "wb") as f:
            proc = self.node(name).popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        return self.bg.add(f"{shlex.join(argv)} in {name}", proc)

    def stack_flags_for(self, name: str, step: str) -> tuple[Host, list[str]]:
        h = self.topo.hosts[name]
        flags = ["--trace", f"{self.out}/{step}.jsonl", "--pcap", f"{self.out}/{step}.pcap",
                 *self.stack_flags, *h.args]
        if h.impair:
            flags += ["--impair", h.impair]
        return h, flags

    def stack_up(self, name: str, step: str, flags: list[str] | None = None,
                 code: str | None = None) -> None:
        """``stack up`` in stack host ``name`` in the background, its files
        named ``step``; with ``code``, that Python program over it (``stack run``)."""
        h, base = self.stack_flags_for(name, step)
        self.node(name).stack_up(h.address, f"{self.out}/{step}.log", h.gateway,
                                 self.topo.links[h.link].mtu, base + list(flags or []),
                                 None if code is None else ["-c", code])

    def stack_down(self, name: str) -> None:
        self.node(name).stack_down()

    def stack_run(self, name: str, step: str, code: str, flags: list[str] | None = None,
                  timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Python ``code`` over the stack in host ``name`` (``stack run -c``)."""
        h, base = self.stack_flags_for(name, step)
        result = self.node(name).stack_run(h.address, ["-c", code], h.gateway,
                                           self.topo.links[h.link].mtu,
                                           base + list(flags or []), timeout)
        with open(f"{self.out}/{step}.log", "w") as f:
            f.write(result.stdout + result.stderr)
        return result

    def stack_tool(self, name: str, step: str, command: str, args: list[str],
                   timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Another ``stack`` command with a stack of its own (``stack
        traceroute``) in stack host ``name``, to its end."""
        h, base = self.stack_flags_for(name, step)
        node = self.node(name)
        mtu = self.topo.links[h.link].mtu
        node.bridge(mtu)
        result = self.run(name, node.stack_command(command, h.address, h.gateway, mtu, base)
                          + args, timeout)
        with open(f"{self.out}/{step}.log", "w") as f:
            f.write(result.stdout)
        return result

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait_for(self, path: str, text: str, timeout: float) -> bool:
        """Until ``path`` contains ``text`` (a program's "I am done"), at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path, errors="replace") as f:
                    if text in f.read():
                        return True
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        return False

    def finish(self) -> None:
        """The scenario is over: stop the background programs and the
        captures, so that every capture file is complete before it is read."""
        self.bg.stop_all()

    # ---- tearing down -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything started, in reverse, then Mininet (also after a failure)."""
        self.bg.stop_all()
        net, self.net = self.net, None
        if net is None:
            return
        for host in net.hosts:
            stopper = getattr(host, "stopper", None)
            if stopper is not None:
                stopper.stop_all()
        net.stop()
