"""``Stack.ping``: one ICMP echo request and its reply, waited for on the
caller's thread while the stack's thread delivers the answer."""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING

from stack.wire.ipv4 import ip2int

if TYPE_CHECKING:
    from stack.runtime import Stack


class Pinger:
    """The echo identifiers and sequence numbers of one stack's pings."""

    def __init__(self, net: Stack, ident: int) -> None:
        self.net = net
        self.seq = 0
        self.ident = ident

    def ping(self, host: str, size: int = 56, timeout: float = 2.0, df: bool = False) -> float:
        """Send one ICMP echo request; return the round-trip time in seconds.

        Raises TimeoutError when no reply arrives in time."""
        net = self.net
        dst = ip2int(host)
        data = bytes(i & 0xFF for i in range(size))
        done = threading.Event()
        result: dict[str, float] = {}
        with net.lock:
            self.seq = seq = (self.seq + 1) & 0xFFFF
            self.ident = ident = (self.ident + 1) & 0xFFFF
            sent = net.clock()

            def on_reply(rseq: int, payload: bytes, now: float) -> None:
                if rseq == seq and payload == data:
                    result["rtt"] = now - sent
                    done.set()

            net.icmp.echo_waiters[(dst, ident)] = on_reply
            try:
                net.icmp.send_echo(dst, ident, seq, data, sent, df=df)
            except OSError:
                del net.icmp.echo_waiters[(dst, ident)]
                raise
            net.kick()
        try:
            if not done.wait(timeout):
                raise TimeoutError(errno.ETIMEDOUT, f"no echo reply from {host}")
        finally:
            with net.lock:
                net.icmp.echo_waiters.pop((dst, ident), None)
        return result["rtt"]
