"""The datagram (UDP) endpoint of the socket facade.

:class:`DatagramEndpoint` owns the protocol half, a
:class:`~stack.net.udp.UdpEndpoint` in ``net.udp``, and implements the
method set of :class:`~stack.socket_base.Endpoint` for ``SOCK_DGRAM`` with
Linux's semantics: connect() only fixes the peer, an ICMP error about a
datagram sent to the connected peer is the next call's error, sending to
a broadcast address needs SO_BROADCAST (EACCES as Linux).

Path MTU, as Linux: ``IP_MTU_DISCOVER`` (10) takes IP_PMTUDISC_DONT (0),
WANT (1, the default: no DF, datagrams fragmented to the path's MTU), DO
(2) and PROBE (3) (DF set: a datagram bigger than the path MTU is
EMSGSIZE; PROBE is treated as DO here), up to OMIT (5); ``IP_MTU`` (14)
reads a connected socket's path MTU (ENOTCONN unconnected).
"""

from __future__ import annotations

import errno
from typing import Any

from stack.net.udp import UdpEndpoint
from stack.socket_base import (
    IPPROTO_UDP, MSG_PEEK, MSG_TRUNC, SO_BROADCAST, SO_RCVBUF, SOCK_DGRAM,
    SOL_SOCKET, Endpoint, error,
)


IPPROTO_IP = 0
IP_MTU_DISCOVER = 10   # Linux's, absent from Python's socket module
IP_MTU = 14
IP_PMTUDISC_DONT, IP_PMTUDISC_WANT, IP_PMTUDISC_DO, IP_PMTUDISC_PROBE = 0, 1, 2, 3


class DatagramEndpoint(Endpoint):
    kind = SOCK_DGRAM
    proto = IPPROTO_UDP

    def __init__(self, net: Any) -> None:
        super().__init__(net)
        self.udp = UdpEndpoint(self.opts[(SOL_SOCKET, SO_RCVBUF)])
        self.udp.on_change = self.changed
        self.pmtudisc = IP_PMTUDISC_WANT

    # -- what the socket asks (lock held) ------------------------------------------------

    def readable(self) -> bool:
        return self.udp.readable

    def writable(self) -> bool:
        return True

    def take_error(self) -> int | None:
        code, self.udp.error = self.udp.error, None
        return code

    def local(self) -> tuple[int, int] | None:
        return self.udp.local

    def remote(self) -> tuple[int, int] | None:
        return self.udp.remote

    def apply_options(self) -> None:
        self.udp.rcvbuf = self.opts[(SOL_SOCKET, SO_RCVBUF)]
        self.udp.broadcast = bool(self.opts[(SOL_SOCKET, SO_BROADCAST)])

    def set_option(self, level: int, option: int, value: Any) -> bool:
        if (level, option) != (IPPROTO_IP, IP_MTU_DISCOVER):
            return False
        if not isinstance(value, int):  # (a buffer: its int, as Linux reads it)
            value = int.from_bytes(bytes(memoryview(value))[:4], "little", signed=True)
        if not 0 <= value <= 5:
            raise error(errno.EINVAL)
        self.pmtudisc = value
        return True

    def get_option(self, level: int, option: int, buflen: int | None) -> Any:
        if level != IPPROTO_IP or option not in (IP_MTU_DISCOVER, IP_MTU):
            return NotImplemented
        if option == IP_MTU_DISCOVER:
            value = self.pmtudisc
        elif self.udp.remote is None:
            raise error(errno.ENOTCONN)
        else:
            value = self.net.ip.path_mtu(self.udp.remote[0])
        return value if buflen is None else value.to_bytes(4, "little")[:buflen]

    def status(self) -> dict[str, Any]:
        ep = self.udp
        return {"proto": "udp", "local": ep.local, "remote": ep.remote,
                "recv_queued": ep.queued, "datagrams_queued": len(ep.queue),
                "rcvbuf": ep.rcvbuf, "error": ep.error, "ttl": self.ttl}

    # -- opening ---------------------------------------------------------------------------

    def bind(self, addr: int, port: int) -> None:
        if addr and not self.net.is_local(addr) and not self.net.ip.is_broadcast(addr):
            raise error(errno.EADDRNOTAVAIL)
        self.net.udp.bind(self.udp, addr, port)

    def connect(self, addr: tuple[int, int]) -> None:
        ep = self.udp
        try:
            self.net.udp.connect(ep, addr)  # 0.0.0.0 is this host; the route gives the source
        except OSError as e:
            raise error(e.errno or errno.ENETUNREACH) from None
        ep.error = None
        # Datagrams from other peers already queued stay; Linux keeps them too.

    # -- data ------------------------------------------------------------------------------

    def sendto(self, mv: memoryview, flags: int, dst: tuple[int, int] | None) -> int:
        ep = self.udp
        if dst is None:
            if ep.remote is None:
                raise error(errno.EDESTADDRREQ)
            dst = ep.remote
        else:
            dst = self.peer_of(dst, ep.local[0] if ep.local is not None else 0)
        self.raise_pending()
        net = self.net
        try:
            n = net.udp.send(ep, mv, dst, net.clock(), ttl=self.ttl,
                             df=self.pmtudisc in (IP_PMTUDISC_DO, IP_PMTUDISC_PROBE))
        except OSError as e:
            raise error(e.errno or errno.EINVAL) from None
        net.kick()
        return n

    def send(self, mv: memoryview, flags: int) -> int:
        return self.sendto(mv, flags, None)

    def sendall(self, mv: memoryview, flags: int) -> None:
        self.sendto(mv, flags, None)

    def recvfrom(self, bufsize: int, flags: int) -> tuple[bytes, tuple[int, int] | None, int]:
        """One datagram (cut to ``bufsize``), its source, and MSG_TRUNC when cut."""
        ep = self.udp
        self.wait(lambda: bool(ep.queue) or ep.error is not None, self.op_timeout(flags))
        self.raise_pending()
        item = ep.queue[0] if flags & MSG_PEEK else ep.pop()
        assert item is not None
        data, addr = item
        self.refresh()
        return data[:bufsize], addr, (MSG_TRUNC if len(data) > bufsize else 0)

    def recv(self, bufsize: int, flags: int) -> bytes:
        return self.recvfrom(bufsize, flags)[0]

    def recv_into(self, mv: memoryview, flags: int) -> int:
        data = self.recvfrom(len(mv), flags)[0]
        mv[:len(data)] = data
        return len(data)

    # -- closing ---------------------------------------------------------------------------

    def shutdown(self, how: int) -> None:
        if self.udp.remote is None:
            raise error(errno.ENOTCONN)
        # Linux accepts it on a connected UDP socket; nothing here changes.

    def close(self) -> None:
        self.net.udp.unbind(self.udp)
