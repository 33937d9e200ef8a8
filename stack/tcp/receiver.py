"""The receiving half of a connection: segment text, the out-of-order queue
and the SACK blocks that describe it (RFC 2018), the advertised window (with
receiver-side SWS avoidance) and delayed ACKs.

A mixin of :class:`~stack.tcp.conn.TcpConnection`; it shares its attributes.
"""

from __future__ import annotations

from stack.native import Reassembly
from stack.tcp.seq import seq_add, seq_diff


class Receiver:
    # ---- text (RFC 9293 3.10.7.4, seventh step) ---------------------------

    def _rcv_text(self, seq: int, payload, fin: bool, now: float) -> bool:
        """Accept trimmed, in-window text starting at ``seq``.

        Returns True when a FIN has become in-order (the caller advances
        ``rcv_nxt`` over it and changes state).
        """
        n = len(payload)
        if seq == self.rcv_nxt:
            if n:
                ooo = self._ooo
                was_empty = not self._rcvbuf
                if ooo is None:
                    self._rcvbuf += payload
                    self.rcv_nxt = seq_add(seq, n)
                    self._unacked += n
                    if n > self._rcv_mss:
                        self._rcv_mss = min(n, self.mss_local)
                else:
                    if ooo.insert(0, payload) < 0:
                        self._trace.drop("tcp", "ooo_full", conn=self.name)
                        self._ack_now = True
                        return False
                    k = ooo.contiguous()
                    self._rcvbuf += ooo.pop(k)
                    self.rcv_nxt = seq_add(self.rcv_nxt, k)
                    if not ooo.buffered():
                        self._ooo = None
                    self._ack_now = True  # filled a hole: tell the sender at once
                if was_empty:
                    self._dirty = True
            if self._ooo_fin is not None and self.rcv_nxt == self._ooo_fin:
                self._ooo_fin = None
                return True
            return fin and self._ooo is None
        # Out of order (seq is after rcv_nxt and inside the window).
        off = seq_diff(seq, self.rcv_nxt)
        self._ack_now = True  # duplicate ACK so the sender can fast-retransmit
        if n:
            ooo = self._ooo
            if ooo is None:
                ooo = self._ooo = Reassembly(max(self.rcvbuf_size, 65535),
                                             self._cfg.ooo_max_holes)
            if ooo.insert(off, payload) < 0:
                self._trace.drop("tcp", "ooo_full", conn=self.name)
                return False
            self._trace.count("tcp", "ooo_segs")
            if self._sack_ok:
                # The block holding this segment goes first in the next SACK.
                recent = self._sack_recent
                recent.insert(0, seq)
                if len(recent) > 8:
                    del recent[8:]
        if fin:
            self._ooo_fin = seq_add(seq, n)
        return False

    def _ooo_clear(self) -> None:
        self._ooo = None
        self._ooo_fin = None
        self._sack_recent.clear()

    def _sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` SACK blocks for the out-of-order queue (RFC 2018 4):
        first the block holding the most recently received segment, then the
        blocks reported most recently, then any others, highest first."""
        ooo = self._ooo
        if ooo is None or limit <= 0:
            return []
        ranges = ooo.ranges()  # offsets from rcv_nxt
        chosen: list[tuple[int, int]] = []
        keep = []
        rcv_nxt = self.rcv_nxt
        for anchor in self._sack_recent:
            off = seq_diff(anchor, rcv_nxt)
            if off <= 0:
                continue  # acknowledged by now
            for r in ranges:
                if r[0] <= off < r[1]:
                    if r not in chosen and len(chosen) < limit:
                        chosen.append(r)
                        keep.append(anchor)
                    break
        self._sack_recent[:] = keep
        for r in reversed(ranges):
            if len(chosen) >= limit:
                break
            if r not in chosen:
                chosen.append(r)
        return [(seq_add(rcv_nxt, lo), seq_add(rcv_nxt, hi)) for lo, hi in chosen]

    # ---- the advertised window ---------------------------------------------

    def _rcv_window(self) -> int:
        """The window field for an outgoing segment; moves ``rcv_adv``.

        The right edge never moves left. It moves right only by at least
        min(half the buffer, one MSS) (RFC 1122 4.2.3.3, receiver SWS).
        """
        free, cur = self._window_space()
        if free > cur and free - cur >= min(self.rcvbuf_size >> 1, self.mss_local):
            field = free >> self._rcv_wscale
        else:
            field = (cur + (1 << self._rcv_wscale) - 1) >> self._rcv_wscale
            if field > 65535:
                field = 65535
        self.rcv_adv = seq_add(self.rcv_nxt, field << self._rcv_wscale)
        return field

    def _window_space(self) -> tuple[int, int]:
        """(free buffer space the window field can express, window advertised now)."""
        free = self.rcvbuf_size - len(self._rcvbuf)
        limit = 65535 << self._rcv_wscale
        if free > limit:
            free = limit
        cur = seq_diff(self.rcv_adv, self.rcv_nxt)
        return free, (cur if cur > 0 else 0)

    def _window_update_due(self) -> bool:
        """After the user read: has the window grown enough to announce?"""
        free, cur = self._window_space()
        return free >= 2 * cur and free - cur >= min(self.rcvbuf_size >> 1, self.mss_local)

    # ---- acknowledgments ---------------------------------------------------

    def _ack_decision(self, now: float) -> None:
        """At the end of segment processing: ACK now, later, or not at all."""
        if self._ack_now:
            self._send_ack(now)
        elif self._unacked:
            if self._unacked >= 2 * self._rcv_mss:
                self._send_ack(now)
            elif self._delack_at is None:
                self._delack_at = now + self._cfg.delayed_ack
