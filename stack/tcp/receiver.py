"""The receiving half of a connection (RFC 9293 3.3.1, the receive sequence
space).

:class:`Receiver` owns RCV.NXT and the advertised window's right edge, the
receive buffer the user reads from, the out-of-order queue with the SACK
blocks that describe it (RFC 2018), TS.Recent (RFC 7323), the urgent mark
(``urgent.py``), and the decision to ACK now, later (delayed ACK) or not at all.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.native import Reassembly
from stack.tcp import timers as T
from stack.tcp.handshake import TS_OPT_LEN
from stack.tcp.states import os_error
from stack.tcp.timers import DELACK
from stack.tcp.seq import seq_add, seq_diff, seq_gt, seq_le, seq_lt
from stack.tcp.urgent import UrgentMark

if TYPE_CHECKING:
    from stack.tcp.conn import TcpConnection

PAWS_IDLE = 24 * 24 * 3600.0          # RFC 7323 5.5: TS.Recent older than 24 days is invalid


class Receiver:
    __slots__ = ("ack_now", "buf", "bufsize", "bytes_received", "cfg", "conn", "data_at", "dsack",
                 "fin_received", "irs", "last_ack_sent", "mss", "mss_cap", "oob_inline", "ooo",
                 "ooo_fin", "pingpong", "quick", "rcv_adv", "rcv_nxt", "sack_recent", "timers",
                 "ts_recent", "ts_recent_age", "unacked", "urgent", "wscale")
    def __init__(self, conn: TcpConnection, bufsize: int, now: float) -> None:
        self.conn = conn
        self.cfg = conn.cfg
        self.timers = conn.timers
        self.irs = 0
        self.rcv_nxt = 0                  # RCV.NXT
        self.rcv_adv = 0                  # right edge of the advertised window
        self.wscale = 0               # our shift, applied to the windows we send
        self.bufsize = bufsize        # SO_RCVBUF
        self.buf = bytearray()        # in-order bytes the user has not read
        self.ooo: Reassembly | None = None  # out-of-order bytes, offsets from nxt
        self.ooo_fin: int | None = None     # where a FIN that came early sits
        self.fin_received = False
        self.unacked = 0              # bytes received since our last ACK
        self.ack_now = False
        self.last_ack_sent = 0
        self.mss_cap = conn.handshake.mss_local  # our MSS: no segment is larger
        self.mss = min(conn.cfg.default_peer_mss, self.mss_cap)  # largest segment seen
        self.sack_recent: list[int] = []  # a byte of each recently received OOO block
        self.dsack: tuple[int, int] | None = None  # a duplicate to report first (RFC 2883)
        self.ts_recent = 0            # TS.Recent
        self.ts_recent_age = now      # when TS.Recent was last set
        self.bytes_received = 0       # payload bytes that arrived in order
        # Linux's delayed-ACK engine: ``quick`` immediate ACKs left (quickack
        # mode, armed by the first data and by duplicates), none while
        # ``pingpong`` (our data answers theirs, the ACK rides on it).
        self.quick = 0
        self.pingpong = False
        self.data_at: float | None = None  # when in-order data last arrived
        self.urgent: UrgentMark | None = None  # the latest urgent mark, until read past
        self.oob_inline = False       # SO_OOBINLINE: the urgent byte stays in the stream

    # ---- the handshake ------------------------------------------------------------

    def start(self, irs: int, wscale: int, tsval: int | None, now: float) -> None:
        """The peer's SYN: its ISN, our window shift, its first timestamp."""
        self.irs = irs
        self.rcv_nxt = seq_add(irs, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, min(self.bufsize, 65535))
        self.wscale = wscale
        if tsval is not None:
            self.ts_recent = tsval
            self.ts_recent_age = now

    # ---- timestamps (RFC 7323) ----------------------------------------------------

    def paws_rejects(self, tsval: int, now: float) -> bool | None:
        """PAWS (5.3 R1): True when ``tsval`` is older than TS.Recent (an old
        duplicate); None when it is older but TS.Recent has been idle for
        more than 24 days (5.5: no longer trusted); False otherwise."""
        if not seq_lt(tsval, self.ts_recent):
            return False
        return True if now - self.ts_recent_age <= PAWS_IDLE else None

    def update_ts_recent(self, tsval: int, seq: int, now: float, force: bool = False) -> None:
        """R3: keep the TSval of the segment our next ACK acknowledges (SEG.SEQ
        <= Last.ACK.sent), never one from a segment past a gap."""
        if (force or not seq_lt(tsval, self.ts_recent)) and seq_le(seq, self.last_ack_sent):
            self.ts_recent = tsval
            self.ts_recent_age = now

    # ---- what the segment processing asks ---------------------------------------------

    def window(self) -> int:
        """RCV.WND: what is left of the window we advertised."""
        w = seq_diff(self.rcv_adv, self.rcv_nxt)
        return w if w > 0 else 0

    def request_ack(self) -> None:
        """ACK at the end of this segment's processing."""
        self.ack_now = True

    # ---- text (RFC 9293 3.10.7.4, seventh step) -------------------------------------

    def fast_path(self, payload: memoryview | bytes, tsval: int | None, now: float) -> None:
        """Header prediction's segment: in order, in the window, nothing
        queued, its timestamp (if any) not older than TS.Recent. TS.Recent
        takes it when our last ACK acknowledged up to here (R3)."""
        if tsval is not None and self.rcv_nxt == self.last_ack_sent:
            self.ts_recent = tsval
            self.ts_recent_age = now
        n = len(payload)
        if not n:
            return
        buf = self.buf
        if not buf:
            self.conn.changed()
        buf += payload
        if not self.bytes_received:
            self._quickack()
        self.rcv_nxt = seq_add(self.rcv_nxt, n)
        self.bytes_received += n
        self.unacked += n
        self.data_at = now
        if n > self.mss:
            self._seen(n)

    def _seen(self, n: int) -> None:
        """A segment of ``n`` bytes, larger than any before: the estimate of
        the peer's full segment grows, up to what one segment of our MSS
        holds (less the timestamps once agreed). A segment GRO merged from
        several is larger than that and teaches nothing more (Linux uses
        its gso_size)."""
        cap = self.mss_cap - TS_OPT_LEN if self.conn.handshake.ts_ok else self.mss_cap
        self.mss = n if n < cap else cap

    def text(self, seq: int, payload: memoryview | bytes, fin: bool) -> bool:
        """Accept trimmed, in-window text starting at ``seq``.

        Returns True when a FIN has become in-order (the caller then calls
        :meth:`take_fin` and changes state)."""
        n = len(payload)
        if seq == self.rcv_nxt:
            if n:
                ooo = self.ooo
                was_empty = not self.buf
                self.data_at = self.conn.now
                if ooo is None:
                    self.buf += payload
                    if not self.bytes_received:
                        self._quickack()
                    self.rcv_nxt = seq_add(seq, n)
                    self.bytes_received += n
                    self.unacked += n
                    if n > self.mss:
                        self._seen(n)
                else:
                    if ooo.insert(0, payload) < 0:
                        self.conn.trace.drop("tcp", "ooo_full", conn=self.conn.name)
                        self.ack_now = True
                        return False
                    k = ooo.contiguous()
                    self.buf += ooo.pop(k)
                    self.rcv_nxt = seq_add(self.rcv_nxt, k)
                    self.bytes_received += k
                    if not ooo.buffered():
                        self.ooo = None
                    self.ack_now = True  # filled a hole: tell the sender at once
                if was_empty:
                    self.conn.changed()
            if self.ooo_fin is not None and self.rcv_nxt == self.ooo_fin:
                self.ooo_fin = None
                return True
            return fin and self.ooo is None
        # Out of order (seq is after nxt and inside the window).
        off = seq_diff(seq, self.rcv_nxt)
        self.ack_now = True  # duplicate ACK so the sender can fast-retransmit
        if n:
            ooo = self.ooo
            if ooo is None:
                ooo = self.ooo = Reassembly(max(self.bufsize, 65535), self.cfg.ooo_max_holes)
            for lo, hi in ooo.ranges():
                lo, hi = max(lo, off), min(hi, off + n)
                if lo < hi:  # held already: the first such part is the D-SACK
                    self.duplicate(seq_add(self.rcv_nxt, lo), seq_add(self.rcv_nxt, hi))
                    break
            if ooo.insert(off, payload) < 0:
                self.conn.trace.drop("tcp", "ooo_full", conn=self.conn.name)
                return False
            self.conn.trace.count("tcp", "ooo_segs")
            if self.conn.handshake.sack_ok:
                # The block holding this segment goes first in the next SACK.
                recent = self.sack_recent
                recent.insert(0, seq)
                if len(recent) > 8:
                    del recent[8:]
        if fin:
            self.ooo_fin = seq_add(seq, n)
        return False

    def take_fin(self, closing_first: bool = False) -> None:
        """The peer's FIN is in order: it occupies one sequence number.
        ``closing_first``: the peer closes first (ESTABLISHED): as Linux
        (tcp_fin enters pingpong mode), the ACK is delayed, so that our own
        FIN, if the application closes at once, carries it; but not before
        any data came (Linux's delayed-ACK timeout is still 0 then)."""
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self.fin_received = True
        if closing_first and self.bytes_received and not self.ack_now:
            self.pingpong = True
            self.unacked += 1
        else:
            self.ack_now = True
        self.conn.changed()
        self.clear_queue()

    def clear_queue(self) -> None:
        self.ooo = None
        self.ooo_fin = None
        self.sack_recent.clear()

    def discard(self) -> None:
        """Nobody will read (closed by the user): drop what is buffered."""
        self.buf = bytearray()

    @property
    def sack_due(self) -> bool:
        """Is there something for SACK blocks to say (with SACK negotiated)?"""
        return self.ooo is not None or self.ooo_fin is not None or self.dsack is not None

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` SACK blocks: a D-SACK block first when a duplicate
        just arrived (RFC 2883 4), then the out-of-order queue (RFC 2018 4):
        the block holding the most recently received segment, then the
        blocks reported most recently, then any others, highest first. A FIN
        that came early counts as the byte after its data (as Linux)."""
        dsack, self.dsack = self.dsack, None
        head = [dsack] if dsack is not None and limit > 0 else []
        return head + self._ooo_blocks(limit - len(head))

    def _ooo_blocks(self, limit: int) -> list[tuple[int, int]]:
        ooo = self.ooo
        nxt = self.rcv_nxt
        ranges = ooo.ranges() if ooo is not None else []  # offsets from nxt
        if self.ooo_fin is not None:
            fin = seq_diff(self.ooo_fin, nxt)
            if ranges and ranges[-1][1] == fin:
                ranges[-1] = (ranges[-1][0], fin + 1)
            else:
                ranges.append((fin, fin + 1))
        if not ranges or limit <= 0:
            return []
        chosen: list[tuple[int, int]] = []
        keep = []
        for anchor in self.sack_recent:
            off = seq_diff(anchor, nxt)
            if off <= 0:
                continue  # acknowledged by now
            for r in ranges:
                if r[0] <= off < r[1]:
                    if r not in chosen and len(chosen) < limit:
                        chosen.append(r)
                        keep.append(anchor)
                    break
        self.sack_recent[:] = keep
        for r in reversed(ranges):
            if len(chosen) >= limit:
                break
            if r not in chosen:
                chosen.append(r)
        return [(seq_add(nxt, lo), seq_add(nxt, hi)) for lo, hi in chosen]

    # ---- urgent data (RFC 9293 3.8.5, sixth step; urgent.py) ----------------------------

    @property
    def copied_seq(self) -> int:
        """The sequence number of the next byte the user reads."""
        return seq_add(self.rcv_nxt, -len(self.buf) - self.fin_received)

    def urgent_arrives(self, seq: int, ptr: int | None, data_seq: int,
                       payload: bytes | memoryview) -> None:
        """A segment at ``seq`` (its data from ``data_seq``), with URG set
        (``ptr``, its urgent pointer) or not (None), before its text is
        taken (Linux's ``tcp_urg``). A new mark replaces the old one, unless
        it marks a byte already read or before RCV.NXT, or is not newer."""
        mark = self.urgent
        if ptr is not None:
            at = seq_add(seq, ptr - 1 if ptr else 0)
            copied = self.copied_seq
            if (not seq_gt(copied, at) and not seq_lt(at, self.rcv_nxt)
                    and (mark is None or seq_gt(at, mark.seq))):
                if (mark is not None and mark.seq == copied and self.buf
                        and not self.oob_inline):
                    del self.buf[:1]  # the old urgent byte, next to read, leaves the stream
                mark = self.urgent = UrgentMark(at)
                self.conn.trace.count("tcp", "urgent_marks")
        if mark is not None and mark.catch(data_seq, payload):
            self.conn.changed()

    def pass_mark(self) -> None:
        """A read begins (Linux's ``tcp_recvmsg``, even one that then finds
        nothing): an out-of-band urgent byte next in line is skipped."""
        mark = self.urgent
        if mark is not None and not self.oob_inline and self.buf and \
                mark.seq == self.copied_seq:
            del self.buf[:1]
            self.urgent = None

    def _upto(self, n: int) -> int:
        """How much of ``n`` a read takes: it stops before the mark; one
        that starts at the mark (SO_OOBINLINE) reads past it, ending it."""
        self.pass_mark()
        mark = self.urgent
        if mark is not None and self.buf:
            off = seq_diff(mark.seq, self.copied_seq)
            if off > 0:
                return n if n < off else off
            self.urgent = None
        return n

    @property
    def has_data(self) -> bool:
        """A read would return bytes: the buffer holds more than an
        out-of-band urgent byte next in line (Linux's ``tcp_poll`` target)."""
        buf = self.buf
        mark = self.urgent
        if mark is None or self.oob_inline or len(buf) != 1:
            return bool(buf)
        return mark.seq != self.copied_seq

    def read_urgent(self, peek: bool, done: bool) -> bytes:
        """``recv(MSG_OOB)``: see :meth:`UrgentMark.read`; EINVAL when there
        is no mark, or with SO_OOBINLINE."""
        if self.urgent is None or self.oob_inline:
            raise os_error(errno.EINVAL)
        return self.urgent.read(peek, done or self.fin_received)

    def set_oob_inline(self, on: bool) -> None:
        self.oob_inline = on

    # ---- the user reads ---------------------------------------------------------------

    def read(self, n: int) -> bytes:
        n = self._upto(n)
        buf = self.buf
        if n >= len(buf):
            out = bytes(buf)
            buf.clear()
        else:
            out = bytes(buf[:n])
            del buf[:n]
        return out

    def read_into(self, mv: memoryview, n: int) -> int:
        buf = self.buf
        k = min(self._upto(n), len(buf))
        mv[:k] = buf[:k]
        del buf[:k]
        return k

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes left in the buffer, stopping at the mark and
        skipping an out-of-band urgent byte next in line."""
        mark = self.urgent
        start = 0
        if mark is not None and self.buf:
            off = seq_diff(mark.seq, self.copied_seq)
            if off > 0:
                n = min(n, off)
            elif not self.oob_inline:
                start = 1
        return bytes(self.buf[start:start + n])

    # ---- the advertised window --------------------------------------------------------

    def _quickack(self) -> None:
        """Quickack mode (Linux ``tcp_incr_quickack``): ACK the next segments
        at once, as many as half the window holds full segments (2 to 16),
        so a new connection's sender grows its window without waiting."""
        mss = self.mss if self.mss > 0 else 536
        limit = self.cfg.max_quickacks
        self.quick = max(self.quick, min(max(self.window() // (2 * mss), 2), limit))

    def duplicate(self, start: int, end: int) -> None:
        """Bytes ``start``..``end`` arrived again: tell the sender in a D-SACK
        block (RFC 2883), and, since it missed our ACKs, ACK at once from now
        on for a while (Linux enters quickack mode)."""
        if self.conn.handshake.sack_ok:
            self.dsack = (start, end)
        self._quickack()
        self.ack_now = True

    def data_sent(self, now: float) -> None:
        """We send data: an answer within the delayed-ACK time of their data
        makes the connection interactive (Linux's pingpong mode)."""
        if self.data_at is not None and now - self.data_at < self.cfg.delayed_ack:
            self.pingpong = True

    def delayed_ack_fired(self) -> None:
        """The delayed ACK had to go alone: no answer rides on it, so the
        connection is not interactive after all."""
        self.pingpong = False

    def ack_fields(self, syn: bool = False) -> tuple[int, int]:
        """(ACK number, window field) for an outgoing ACK; moves the right
        edge and cancels a pending delayed ACK.

        The right edge never moves left. It moves right only by at least
        min(half the buffer, one MSS) (RFC 1122 4.2.3.3, receiver SWS). A
        SYN,ACK's window is :meth:`syn_window`."""
        nxt = self.rcv_nxt
        if self.quick and self.unacked:
            self.quick = max(self.quick - -(-self.unacked // max(self.mss, 1)), 0)
        self.unacked = 0
        self.ack_now = False
        if self.timers.at[DELACK] is not None:
            self.timers.stop(DELACK)
        self.last_ack_sent = nxt
        if syn:
            return nxt, self.syn_window()
        free, cur = self._space()
        shift = self.wscale
        if free > cur and free - cur >= min(self.bufsize >> 1, self.cfg.mss):
            field = free >> shift
        else:
            field = (cur + (1 << shift) - 1) >> shift
            if field > 65535:
                field = 65535
        self.rcv_adv = seq_add(nxt, field << shift)
        return nxt, field

    def syn_window(self) -> int:
        """The window of a SYN, never scaled (RFC 7323 2.2)."""
        return self.bufsize if self.bufsize < 65535 else 65535

    def _space(self) -> tuple[int, int]:
        """(free buffer space the window field can express, window advertised now)."""
        free = self.bufsize - len(self.buf)
        limit = 65535 << self.wscale
        if free > limit:
            free = limit
        cur = seq_diff(self.rcv_adv, self.rcv_nxt)
        return free, (cur if cur > 0 else 0)

    def window_update_due(self) -> bool:
        """After the user read: has the window grown enough to announce?"""
        free, cur = self._space()
        return free >= 2 * cur and free - cur >= min(self.bufsize >> 1, self.cfg.mss)

    # ---- acknowledgments ----------------------------------------------------------------

    def ack_due(self, now: float) -> bool:
        """At the end of segment processing: should an ACK go now? (Else a
        delayed ACK is armed when data waits to be acknowledged.)"""
        if self.ack_now:
            return True
        if self.unacked:
            if self.unacked >= 2 * self.mss or (self.quick and not self.pingpong):
                return True
            self.timers.start_if_idle(T.DELACK, now + self.cfg.delayed_ack)
        return False
