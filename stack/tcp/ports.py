"""Local ports: bindings, conflicts and ephemeral port choice (RFC 6056)."""

from __future__ import annotations

import errno
import hashlib
import itertools
import random
import struct
from collections import Counter
from typing import Any

from stack.tcp.config import TcpConfig

_PORT_TUPLE = struct.Struct("!IIH")


class Ports:
    def __init__(self, config: TcpConfig, secret: bytes, rng: random.Random) -> None:
        self._cfg = config
        self._secret = secret
        self._rng = rng
        self._bound: Counter[tuple[int, int]] = Counter()
        self._next_ephemeral = rng.randrange(1 << 16)
        self._conns: dict[tuple[int, int, int, int], Any] = {}
        self._listeners: dict[tuple[int, int], Any] = {}

    def attach(self, conns: dict[tuple[int, int, int, int], Any],
               listeners: dict[tuple[int, int], Any]) -> None:
        """The layer's tables, read (never written) to find ports in use."""
        self._conns = conns
        self._listeners = listeners

    def bound_count(self) -> int:
        return sum(self._bound.values())

    def taken(self, addr: int, port: int, conns: bool) -> bool:
        for (a, p) in itertools.chain(self._listeners, self._bound):
            if p == port and (a == addr or a == 0 or addr == 0):
                return True
        if conns:
            for (la, lp, _ra, _rp) in self._conns:
                if lp == port and (la == addr or addr == 0):
                    return True
        return False

    def bind(self, addr: int, port: int) -> int:
        """Reserve ``(addr, port)`` (checked by the caller; 0: pick a free port)."""
        if port == 0:
            cfg = self._cfg
            num = cfg.ephemeral_high - cfg.ephemeral_low + 1
            start = self._rng.randrange(num)
            for i in range(num):
                p = cfg.ephemeral_low + (start + i) % num
                if not self.taken(addr, p, conns=True):
                    port = p
                    break
            else:
                raise OSError(errno.EADDRINUSE, "Address already in use")
        self._bound[(addr, port)] += 1
        return port

    def unbind(self, addr: int, port: int) -> None:
        k = (addr, port)
        if self._bound[k] > 1:
            self._bound[k] -= 1
        else:
            self._bound.pop(k, None)

    def ephemeral(self, laddr: int, raddr: int, rport: int) -> int:
        """RFC 6056 algorithm 3 (simple hash-based port selection)."""
        cfg = self._cfg
        num = cfg.ephemeral_high - cfg.ephemeral_low + 1
        offset = int.from_bytes(hashlib.blake2s(_PORT_TUPLE.pack(laddr, raddr, rport),
                                                key=self._secret, digest_size=4).digest(), "big")
        for count in range(num):
            port = cfg.ephemeral_low + (self._next_ephemeral + offset + count) % num
            if ((laddr, port, raddr, rport) not in self._conns
                    and not self.taken(laddr, port, conns=False)):
                self._next_ephemeral += count + 1
                return port
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
