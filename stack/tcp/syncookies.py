"""SYN cookies (RFC 4987 section 3.6), as Linux sends them.

When a listener's half-open queue is full (``TcpConfig.syn_backlog``), a SYN
is answered with a SYN,ACK whose initial sequence number encodes everything
needed to finish the handshake later, and no state is kept. A returning ACK
whose acknowledgment number decodes to a valid cookie creates the
established connection directly.

The cookie (the layout of Linux's ``secure_tcp_syn_cookie``)::

    isn = H1(4-tuple) + peer_isn + (count << 24) + (H2(4-tuple, count, peer_isn, i) << 3) + i

* ``count``: the cookie clock, one tick every ``TICK`` = 64 seconds, modulo
  256. A cookie is valid for ``MAX_AGE`` ticks (up to two minutes).
* ``H1``: a keyed hash (BLAKE2s with the layer's secret) of (local address,
  local port, remote address, remote port); ``H2`` (21 bits): another of the
  same and the count, the peer's ISN and ``i``.
* ``i``: the index of the largest entry of :data:`MSS_TABLE` not above the
  peer's MSS (3 bits).

Checking an ACK (its ``ack - 1`` is the cookie, its ``seq - 1`` the peer's
ISN): subtract ``H1`` and the peer's ISN; the top byte is the count, which
must be at most ``MAX_AGE - 1`` ticks old; the low 3 bits are ``i`` and the
21 above them must equal ``H2``. Unlike Linux (which adds the index to the
hash), the hash covers the index and the peer's ISN, so a cookie off by a
few does not decode to another MSS. A blind forger succeeds with
probability ``MAX_AGE / 2**21`` (about 1 in a million) per guess.

Options, as Linux (``cookie_init_timestamp``): when the peer's SYN carries
timestamps, the cookie SYN,ACK offers timestamps, window scaling and SACK as
a normal SYN,ACK would, and hides what the peer offered in the low 6 bits of
our timestamp value: its window scale (4 bits, 15 for none) and SACK
permitted (1 bit); the value is moved back by 64 ms if that put it ahead of
our timestamp clock. The peer echoes it in the returning ACK's TSecr, from
which the options are restored. A SYN without timestamps leaves nowhere to
hide them: the cookie SYN,ACK then offers MSS only, and the connection runs
without window scaling and SACK.

Any data or FIN on the returning ACK is processed as usual; data the peer
put on its SYN is not acknowledged and is sent again. Cookies are checked
only on listeners that overflowed in the last ``MAX_AGE * TICK`` seconds, as
Linux does.
"""

from __future__ import annotations

import hashlib
import struct

from typing import TYPE_CHECKING

from stack.tcp.emit import SynOffers, conn_name
from stack.tcp.handshake import wscale_for
from stack.tcp.seq import seq_add, seq_gt, seq_offset, tsval
from stack.wire.tcp import ACK, SYN, TcpSegment

if TYPE_CHECKING:
    from stack.tcp.layer import TcpLayer
    from stack.tcp.listener import Listener

TICK = 64.0                 # seconds per count
MAX_AGE = 2                 # counts a cookie stays valid (this one and the one before)
MSS_TABLE = (64, 256, 536, 1024, 1220, 1300, 1440, 1460)
_LOW = (1 << 24) - 1
_H2_MASK = (1 << 21) - 1
_TUPLE = struct.Struct("!IHIH")
TS_BITS = 6                 # low bits of the SYN,ACK's TSval that carry the options
TS_NO_WSCALE = 0x0F
TS_SACK = 0x10
_TUPLE_MORE = struct.Struct("!IHIHBIB")


def mss_index(mss: int) -> int:
    """The index of the largest table entry not above ``mss``."""
    for i in range(len(MSS_TABLE) - 1, 0, -1):
        if MSS_TABLE[i] <= mss:
            return i
    return 0


class SynCookies:
    """Makes and checks cookies for one :class:`~stack.tcp.layer.TcpLayer`."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _h1(self, laddr: int, lport: int, raddr: int, rport: int) -> int:
        d = hashlib.blake2s(_TUPLE.pack(laddr, lport, raddr, rport), key=self._secret,
                            person=b"cookie1", digest_size=4).digest()
        return int.from_bytes(d, "big")

    def _h2(self, laddr: int, lport: int, raddr: int, rport: int, count: int, peer_isn: int,
            idx: int) -> int:
        d = hashlib.blake2s(_TUPLE_MORE.pack(laddr, lport, raddr, rport, count, peer_isn, idx),
                            key=self._secret, person=b"cookie2", digest_size=4).digest()
        return int.from_bytes(d, "big") & _H2_MASK

    @staticmethod
    def count(now: float) -> int:
        return int(now // TICK) & 0xFF

    def make(self, laddr: int, lport: int, raddr: int, rport: int, peer_isn: int, mss: int,
             now: float) -> int:
        """The cookie ISN for a SYN from ``(raddr, rport)`` with MSS ``mss``."""
        count = self.count(now)
        idx = mss_index(mss)
        low = (self._h2(laddr, lport, raddr, rport, count, peer_isn, idx) << 3) | idx
        return seq_add(self._h1(laddr, lport, raddr, rport) + peer_isn + (count << 24), low)

    def check(self, laddr: int, lport: int, raddr: int, rport: int, peer_isn: int,
              cookie: int, now: float) -> int | None:
        """The MSS a valid cookie encodes, or None (forged, or older than ``MAX_AGE``)."""
        v = seq_offset(cookie, self._h1(laddr, lport, raddr, rport) + peer_isn)
        count = v >> 24
        if (self.count(now) - count) & 0xFF >= MAX_AGE:
            return None
        idx = v & 7
        if (v & _LOW) >> 3 != self._h2(laddr, lport, raddr, rport, count, peer_isn, idx):
            return None
        return MSS_TABLE[idx]

    # ---- options in the timestamp ----------------------------------------------------

    @staticmethod
    def ts_encode(ts_now: int, wscale: int | None, sack: bool) -> int:
        """Our TSval with the peer's options in its low bits, never ahead of ``ts_now``."""
        bits = (TS_NO_WSCALE if wscale is None else min(wscale, 14)) | (TS_SACK if sack else 0)
        value = (ts_now >> TS_BITS << TS_BITS) | bits
        if seq_gt(value, ts_now):
            value = seq_add(value, -(1 << TS_BITS))
        return value

    @staticmethod
    def ts_decode(tsecr: int) -> tuple[int | None, bool]:
        """(peer's window scale or None, SACK permitted) from an echoed TSval."""
        ws = tsecr & TS_NO_WSCALE
        return (None if ws == TS_NO_WSCALE else ws), bool(tsecr & TS_SACK)

    # ---- the two ends of a cookie's trip ---------------------------------------------

    def send_synack(self, layer: TcpLayer, lst: Listener, src: int, dst: int, seg: TcpSegment,
                    now: float) -> None:
        """Answer a SYN for the full listener ``lst`` with a cookie; keep nothing."""
        cfg = layer.config
        peer_mss = seg.mss if seg.mss is not None else cfg.default_peer_mss
        isn = self.make(dst, seg.dst_port, src, seg.src_port, seg.seq, peer_mss, now)
        wscale = ts = None
        sack = False
        if cfg.timestamps and seg.timestamps is not None:
            peer_ws = seg.wscale if cfg.window_scaling else None
            sack = cfg.sack and seg.sack_perm
            ts_now = tsval(layer.ts_offset(dst, seg.dst_port, src, seg.src_port), now)
            ts = (self.ts_encode(ts_now, peer_ws, sack), seg.timestamps[0])
            wscale = wscale_for(cfg.rcvbuf) if peer_ws is not None else None
        layer.emitter.send(dst, seg.dst_port, src, seg.src_port, isn, seq_add(seg.seq, 1),
                           SYN | ACK, min(cfg.rcvbuf, 65535),
                           syn=SynOffers(layer.mss_for(src), wscale, sack, ts), cookie=True)
        lst.syn_overflow_at = now
        layer.trace.count("tcp", "syncookies_sent")

    def ack_in(self, layer: TcpLayer, lst: Listener, src: int, dst: int, seg: TcpSegment,
               now: float) -> TcpSegment | None:
        """An ACK for listener ``lst``: if it carries a valid cookie, the SYN it
        stands for; None when it is not ours (the caller answers as for any
        stray ACK).

        The SYN is rebuilt from what the cookie kept: its sequence number,
        its MSS (as the table rounded it) and the options our SYN,ACK
        accepted (from the echoed timestamp)."""
        at = lst.syn_overflow_at
        if at is None or now - at > MAX_AGE * TICK:
            return None
        trace = layer.trace
        peer_isn = seq_add(seg.seq, -1)
        mss = self.check(dst, seg.dst_port, src, seg.src_port, peer_isn, seq_add(seg.ack, -1),
                         now)
        if mss is None:
            trace.drop("tcp", "syncookie_failed", conn=conn_name(dst, seg.dst_port, src,
                                                                 seg.src_port))
            return None
        trace.count("tcp", "syncookies_recv")
        wscale, sack, ts = None, False, None
        if layer.config.timestamps and seg.timestamps is not None and seg.timestamps[1]:
            wscale, sack = self.ts_decode(seg.timestamps[1])
            ts = (seg.timestamps[0], 0)
        return TcpSegment(seg.src_port, seg.dst_port, peer_isn, 0, SYN, seg.window,
                          mss=mss, wscale=wscale, sack_perm=sack, timestamps=ts)
