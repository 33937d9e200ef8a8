"""Name resolution for the stack's users: ``getaddrinfo`` and the other name
functions of the ``socket`` module, answered by the stack.

This is the interface the drop-in and ``Stack`` use. For now it knows only
numeric addresses; the hosts table and the DNS stub resolver
(:mod:`stack.net.dns`) come next (issue 11).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stack.runtime import Stack

AddrInfo = tuple[int, int, int, str, tuple[str, int]]


class Names:
    """The name functions of one stack (``net.names``)."""

    def __init__(self, net: "Stack", dns: list[str] | None = None,
                 hosts: dict[str, str] | None = None) -> None:
        self.net = net
        self.dns = list(dns or [])
        self.hosts = dict(hosts or {})

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[AddrInfo]:
        """Numeric IPv4 hosts and ports only, for now (the libc semantics next)."""
        if family not in (0, socket.AF_INET):
            raise socket.gaierror(socket.EAI_FAMILY, "ai_family not supported")
        if host is None or host == "":
            host = "0.0.0.0" if flags & socket.AI_PASSIVE else "127.0.0.1"
        try:
            socket.inet_aton(host)
        except (OSError, TypeError):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        port = int(port or 0)
        kinds = [(socket.SOCK_STREAM, socket.IPPROTO_TCP), (socket.SOCK_DGRAM, socket.IPPROTO_UDP)]
        return [(socket.AF_INET, t, p, "", (host, port)) for t, p in kinds
                if type in (0, t) and proto in (0, p)]

    def gethostbyname(self, name: str) -> str:
        raise NotImplementedError

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        raise NotImplementedError

    def gethostbyaddr(self, address: str) -> tuple[str, list[str], list[str]]:
        raise NotImplementedError

    def getnameinfo(self, sockaddr: tuple[str, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError

    def getfqdn(self, name: str = "") -> str:
        raise NotImplementedError
