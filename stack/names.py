"""Name resolution for the stack's users: ``getaddrinfo`` and the other name
functions of the ``socket`` module, answered by the stack (``net.names``;
``net.getaddrinfo`` & co. delegate here, and the drop-in installs them).

Order of answers, as glibc's ``hosts: files dns``: numeric addresses (in
every form ``inet_aton`` takes), then the hosts table
(:mod:`stack.names_hosts`: ``hosts=`` entries over ``/etc/hosts``, and
``localhost``), then DNS through the stack itself (:mod:`stack.names_dns`)
to the ``dns=`` servers. The argument checks, flags, service names and
socket types follow CPython and glibc to the letter
(:mod:`stack.names_gai`).

The stack speaks IPv4 only, and answers as glibc does on a host with only
IPv4 addresses: ``AF_UNSPEC`` gives IPv4 results, an IPv4 literal asked for
as ``AF_INET6`` (or an IPv6 one as IPv4) is ``EAI_ADDRFAMILY``, and any
other ``AF_INET6`` request is ``EAI_NONAME`` (glibc's ``AI_ADDRCONFIG``
answer there). Several addresses keep the order of the table or answer
(glibc's RFC 6724 sort is not applied).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from stack.names_dns import DnsClient
from stack.names_gai import (AI_KNOWN, H_ERRNO, HOST_NOT_FOUND, NI_KNOWN, NO_RECOVERY, address_info,
                             c_int, digits_dots, gaierror, herror, host_arg, hostname_ok, inet_aton,
                             inet_pton4, ipv6_literal, name_arg, numeric_service, port_arg,
                             service_name, socket_entries, v4_mapped)
from stack.names_hosts import SYSTEM_HOSTS, HostsTable
from stack.net.dns import reverse_name
from stack.wire.dns import TYPE_PTR
from stack.wire.ipv4 import ip2int

if TYPE_CHECKING:
    from stack.runtime import Stack

AddrInfo = tuple[Any, Any, int, str, tuple[str, int]]
AF_INET, AF_INET6, AF_UNSPEC = socket.AF_INET, socket.AF_INET6, socket.AF_UNSPEC


def _servers(dns: list[str] | None) -> list[int]:
    out = []
    for server in dns or []:
        if not isinstance(server, str) or inet_pton4(server) is None:
            raise ValueError(f"dns: {server!r} is not an IPv4 address (a.b.c.d)")
        out.append(ip2int(server))
    return out


class Names:
    """The name functions of one stack (``net.names``)."""

    def __init__(self, net: "Stack", dns: list[str] | None = None,
                 hosts: dict[str, str] | None = None, hosts_file: str = SYSTEM_HOSTS) -> None:
        self.net = net
        self.servers = _servers(dns)
        self.hosts = HostsTable.with_system(hosts, hosts_file)
        self.dns = DnsClient(net, self.servers)
        if net.trace.on and (self.servers or self.hosts.user):  # what names come from
            net.trace.event("dns", "config", servers=list(dns or []),
                            hosts=len(self.hosts.user), system_hosts=len(self.hosts.system))

    # ---- getaddrinfo ----------------------------------------------------------------

    def getaddrinfo(self, host: Any, port: Any, family: Any = 0, type: Any = 0,
                    proto: Any = 0, flags: Any = 0) -> list[AddrInfo]:
        """``socket.getaddrinfo`` over the stack (see the module's notes)."""
        family, type, proto, flags = c_int(family), c_int(type), c_int(proto), c_int(flags)
        name, service = host_arg(host), port_arg(port)
        if name == "*":
            name = None
        if service == "*":
            service = None
        if name is None and service is None:
            raise gaierror(socket.EAI_NONAME)
        if flags & ~AI_KNOWN or (flags & socket.AI_CANONNAME and name is None):
            raise gaierror(socket.EAI_BADFLAGS)
        if family not in (AF_UNSPEC, AF_INET, AF_INET6):
            raise gaierror(socket.EAI_FAMILY)
        if service and flags & socket.AI_NUMERICSERV and numeric_service(service) is None:
            raise gaierror(socket.EAI_NONAME)
        entries = socket_entries(service, type, proto)
        addresses, canonical = self._addresses(name, family, flags)
        out: list[AddrInfo] = []
        for address in addresses:
            for socktype, protocol, number in entries:
                fam, kind = address_info(AF_INET, socktype)
                canon = canonical if not out and flags & socket.AI_CANONNAME else ""
                out.append((fam, kind, protocol, canon, (address, number)))
        return out

    def _addresses(self, name: str | None, family: int, flags: int) -> tuple[list[str], str]:
        """The IPv4 addresses for ``name`` and its canonical name."""
        if name is None:
            if family == AF_INET6:
                raise gaierror(socket.EAI_NONAME)
            return ["0.0.0.0" if flags & socket.AI_PASSIVE else "127.0.0.1"], ""
        literal = inet_aton(name)
        if literal is not None:
            if family == AF_INET6:
                raise gaierror(socket.EAI_ADDRFAMILY)
            return [literal], name
        raw6 = ipv6_literal(name)
        if raw6 is not None:
            mapped = v4_mapped(raw6)
            if mapped is None or family == AF_INET6:
                raise gaierror(socket.EAI_ADDRFAMILY)
            return [mapped], name
        if flags & socket.AI_NUMERICHOST or family == AF_INET6:
            raise gaierror(socket.EAI_NONAME)
        if family == AF_INET and not flags & socket.AI_CANONNAME and digits_dots(name):
            # glibc takes gethostbyname2_r's path for these requests (what
            # CPython's bind/connect ask), with its digits-and-dots shortcut.
            raise gaierror(socket.EAI_NONAME)
        found = self.hosts.addresses(name)
        if found is not None:
            return found
        if not hostname_ok(name):
            raise gaierror(socket.EAI_NONAME)
        result = self.dns.lookup(name)
        if result.error is not None:
            raise gaierror(result.error)
        return list(result.addresses), result.canonical

    # ---- gethostbyname & co. -----------------------------------------------------------

    def _setipaddr(self, name: str, any_family: bool = False) -> str:
        """CPython's ``setipaddr``: the one address a name stands for."""
        if name == "":
            if any_family:  # glibc gives :: and 0.0.0.0 for the wildcard
                raise OSError("wildcard resolved to multiple address")
            return "0.0.0.0"
        if name in ("255.255.255.255", "<broadcast>"):
            return "255.255.255.255"
        quad = inet_pton4(name)
        if quad is not None:
            return quad
        if any_family and ipv6_literal(name) is not None:
            raise herror(HOST_NOT_FOUND)  # an IPv6 address: this stack knows none
        return self.getaddrinfo(name, None, AF_UNSPEC if any_family else AF_INET)[0][4][0]

    def gethostbyname(self, name: Any) -> str:
        return self._setipaddr(name_arg("gethostbyname", name))

    def gethostbyname_ex(self, name: Any) -> tuple[str, list[str], list[str]]:
        """(canonical name, aliases, addresses), as glibc's gethostbyname_r."""
        text = name_arg("gethostbyname_ex", name)
        self._setipaddr(text)
        if digits_dots(text):
            literal = inet_aton(text)  # glibc's digits-and-dots shortcut
            if literal is None:
                raise herror(HOST_NOT_FOUND)
            return text, [], [literal]
        found = self.hosts.byname(text)
        if found is not None:
            return found
        if not hostname_ok(text):  # glibc's DNS backend refuses it so
            raise herror(NO_RECOVERY)
        result = self.dns.lookup(text)
        if result.error is not None:
            raise herror(H_ERRNO.get(result.error, NO_RECOVERY))
        return result.canonical, list(result.aliases), list(result.addresses)

    def gethostbyaddr(self, address: Any) -> tuple[str, list[str], list[str]]:
        """(name, aliases, [address]): the hosts table, else a PTR query."""
        addr = self._setipaddr(name_arg("gethostbyaddr", address), any_family=True)
        found = self.hosts.byaddr(addr)
        if found is not None:
            return found[0], found[1], [addr]
        result = self.dns.lookup(reverse_name(addr), TYPE_PTR)
        if result.error is not None:
            raise herror(H_ERRNO.get(result.error, NO_RECOVERY))
        return result.names[0], list(result.names[1:]), [addr]

    def getnameinfo(self, sockaddr: Any, flags: Any) -> tuple[str, str]:
        """``socket.getnameinfo`` for a numeric IPv4 ``(host, port)``."""
        flags = c_int(flags)
        host, port = _sockaddr(sockaddr)
        infos = self.getaddrinfo(host, str(port), AF_UNSPEC, socket.SOCK_DGRAM, 0,
                                 socket.AI_NUMERICHOST)
        if len(infos) > 1:
            raise OSError("sockaddr resolved to multiple addresses")
        if len(sockaddr) != 2:
            raise OSError("IPv4 sockaddr must be 2 tuple")
        if flags & ~NI_KNOWN:
            raise gaierror(socket.EAI_BADFLAGS)
        if flags & socket.NI_NUMERICHOST and flags & socket.NI_NAMEREQD:
            raise gaierror(socket.EAI_NONAME)
        addr, number = infos[0][4]
        serv = str(number) if flags & socket.NI_NUMERICSERV else \
            service_name(number, bool(flags & socket.NI_DGRAM))
        if flags & socket.NI_NUMERICHOST:
            return addr, serv
        return self._name_of(addr, flags), serv

    def _name_of(self, addr: str, flags: int) -> str:
        found = self.hosts.byaddr(addr)
        if found is not None:
            return found[0]
        result = self.dns.lookup(reverse_name(addr), TYPE_PTR)
        if result.error is None:
            return result.names[0]
        if result.error == socket.EAI_AGAIN:
            raise gaierror(socket.EAI_AGAIN)
        if flags & socket.NI_NAMEREQD:
            raise gaierror(socket.EAI_NONAME)
        return addr

    def getfqdn(self, name: Any = "") -> str:
        """CPython's ``socket.getfqdn`` on this stack's ``gethostbyaddr``."""
        name = name.strip()
        if not name or name in ("0.0.0.0", "::"):
            name = socket.gethostname()
        try:
            hostname, aliases, _ = self.gethostbyaddr(name)
        except OSError:
            return name
        for candidate in [hostname, *aliases]:
            if "." in candidate:
                return candidate
        return hostname


def _sockaddr(sockaddr: Any) -> tuple[str, int]:
    """getnameinfo's ``(host, port[, flowinfo, scope_id])``, checked as CPython does."""
    if not isinstance(sockaddr, tuple):
        raise TypeError("getnameinfo() argument 1 must be a tuple")
    if not 2 <= len(sockaddr) <= 4 or not isinstance(sockaddr[0], str):
        raise TypeError("getnameinfo(): illegal sockaddr argument")
    host = sockaddr[0]
    if "\0" in host:
        raise ValueError("embedded null character")
    port = c_int(sockaddr[1])
    if len(sockaddr) > 2 and c_int(sockaddr[2]) & 0xFFFFFFFF > 0xFFFFF:
        raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
    return host, port
