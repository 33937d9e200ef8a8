"""A Linux TAP device: Ethernet frames to and from the host kernel.

``TapLink("tap0", host_address="192.0.2.1/24")`` attaches to the TAP named
``tap0``, creating it if it does not exist (through python-pytun,
``IFF_TAP | IFF_NO_PI``: frames carry no packet-information prefix). With
``host_address`` the kernel side gets that address and is brought up; the
kernel is then a real peer on the link. ``mtu`` (when not None) sets the
device MTU.

A TAP this object created is removed by :meth:`close`; one that already
existed (``ip tuntap add``) is only detached and left as it was. Existence is
checked with ``if_nametoindex`` in the current network namespace (sysfs may
still show the namespace it was mounted in).

With ``offload=True`` the TAP is opened with ``IFF_VNET_HDR`` and checksum
and TSO offloads (``TUNSETOFFLOAD``): every frame carries a 10-byte
``virtio_net_hdr``. The kernel may then hand over TCP super-frames of up to
64 KB with a partial checksum; :meth:`recv_batch` completes the checksum (as
a NIC would) and returns plain Ethernet frames. A TCP frame larger than the
MTU that the stack sends goes out as a GSO frame the kernel cuts into
MTU-sized segments (TSO). The stack above cannot tell the difference, except
that it may send (and will receive) TCP segments larger than the MTU.

Without offload the TAP does software GSO (``gso=True``, the default): the
stack hands it TCP segments of up to 64 KB, as to a device with TSO, and
:meth:`send` cuts each one into MTU-sized frames and writes them in one C
call (:class:`stack.native.GsoWriter`), never returning to Python between
frames. What reaches the kernel is the same frames the stack would have
built one by one. ``gso=False`` sends MTU-sized segments only.

The fd is non-blocking. ``recv_batch`` reads until the kernel queue is empty
or ``limit`` frames were read, in one C call (:class:`stack.native.FrameReader`);
``send`` writes one frame (or the frames of one cut super-frame) and counts,
rather than raises, the errors that mean "not now" (full queue, no buffers,
the interface is down) in ``dropped``.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
import time

from stack.link.base import TSO_SEGMENT_MAX, Link, queue_full
from stack.native import FrameReader, GsoWriter, checksum, csum_partial

MAX_FRAME = 65535 + 14
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_LEN = VNET_HDR.size
VNET_F_NEEDS_CSUM = 1
VNET_GSO_NONE = 0
VNET_GSO_TCPV4 = 1
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
_NO_VNET = bytes(VNET_LEN)
_PSEUDO = struct.Struct("!4s4sBBH")
# Errors of a write that lose one frame without anything being broken.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM, errno.EIO, errno.ENETDOWN})


SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sh")


class TapError(OSError):
    """Opening or setting up a TAP failed. ``step`` says which part:
    ``"open"`` (TUNSETIFF: busy, permission, no /dev/net/tun), ``"offload"``,
    ``"mtu"`` or ``"host_address"`` (configuring the kernel side)."""

    def __init__(self, step: str, errno_: int | None, message: str) -> None:
        if errno_ is None:
            super().__init__(message)
        else:
            super().__init__(errno_, message)
        self.step = step


def interface_up(name: str) -> bool:
    """Whether interface ``name`` in this namespace is administratively up
    (False when it does not exist)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(name.encode()[:15], 0))
        except OSError:
            return False
    return bool(_IFREQ_FLAGS.unpack(raw)[1] & IFF_UP)


def interface_exists(name: str) -> bool:
    """Whether a network interface ``name`` exists in this namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _ip(*args: str) -> None:
    """Run ``ip ARGS``; raise OSError with its message if it fails."""
    try:
        done = subprocess.run(("ip", *args), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OSError(errno.ENOENT, "the 'ip' command (iproute2) is not installed") from None
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")


def _check_name(name: str) -> None:
    if not name or len(name) > 15 or any(c in name for c in "/ \t\n:") or name in (".", ".."):
        raise ValueError(f"bad interface name {name!r} (1-15 characters, no '/', ':' or spaces)")


class TapLink(Link):
    """An open TAP device. ``created`` tells whether this object made it."""

    # send() may run outside the stack lock (one writer at a time): the
    # runtime then writes frames after releasing its lock.
    defer_writes = True

    def __init__(
        self, name: str = "tap0", host_address: str | None = None, mtu: int | None = 1500,
        offload: bool = False, gso: bool = True,
    ) -> None:
        import pytun  # here: stack.link works without it

        _check_name(name)
        if host_address is not None:
            ipaddress.ip_interface(host_address)  # ValueError on a bad CIDR
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ValueError(f"mtu must be between 68 and 65535, not {mtu}")
        self.name = name
        self.dropped = 0
        self.gso_cut = 0      # super-frames software GSO cut
        self.gso_frames = 0   # frames written from them
        self.created = not interface_exists(name)
        self.offload = offload
        self.gso = gso and not offload
        self.segment_max = TSO_SEGMENT_MAX if offload or self.gso else None
        flags = pytun.IFF_TAP | pytun.IFF_NO_PI | (pytun.IFF_VNET_HDR if offload else 0)
        try:
            self._dev = pytun.TunTapDevice(name=name, flags=flags)
        except pytun.Error as e:  # an OSError; say which device it was about
            raise TapError("open", e.errno, f"cannot open TAP {name!r}: {e.strerror or e}") from None
        self._fd = self._dev.fileno()
        step = "open"
        try:
            os.set_blocking(self._fd, False)
            if offload:
                step = "offload"
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)
            step = "mtu"
            if mtu is not None:
                self._dev.mtu = mtu
            self.mtu = self._dev.mtu
            # One batch: 64 frames of the MTU, or fewer when bigger ones come.
            self._reader = FrameReader(MAX_FRAME, 64, MAX_FRAME + 64 * (self.mtu + 18))
            if self.mtu < 88:  # (no data left to cut after the headers: TCP sends one MSS)
                self.gso, self.segment_max = False, None
            self._gso_writer = GsoWriter(self.mtu) if self.gso else None
            if host_address is not None:
                step = "host_address"
                _ip("addr", "replace", host_address, "dev", name)
                _ip("link", "set", "dev", name, "up")
        except BaseException as e:
            self.close()
            if isinstance(e, OSError) and not isinstance(e, TapError):
                raise TapError(step, e.errno, f"TAP {name!r}: {e.strerror or e}") from e
            raise
        self.host_address = host_address

    @property
    def hwaddr(self) -> bytes:
        """The kernel side's MAC address."""
        return self._dev.hwaddr

    def counters(self) -> dict[str, int]:
        out = queue_full(self, self.dropped)
        if self.gso_cut:
            out["gso_cut"] = self.gso_cut
            out["gso_frames"] = self.gso_frames
        return out

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed link")
        return self._fd

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        if self.offload:
            return self._recv_vnet(limit)
        return self._reader.read(self.fileno(), limit)

    def _recv_vnet(self, limit: int) -> list[bytes]:
        fd = self.fileno()
        frames: list[bytes] = []
        try:
            while len(frames) < limit:
                raw = os.read(fd, MAX_FRAME + VNET_LEN)
                if len(raw) <= VNET_LEN:
                    break
                flags, _gso, _hl, _gs, start, offset = VNET_HDR.unpack_from(raw)
                if flags & VNET_F_NEEDS_CSUM and VNET_LEN + start + offset + 2 <= len(raw):
                    # The checksum field holds the pseudo-header sum; finish it.
                    frame = bytearray(memoryview(raw)[VNET_LEN:])
                    csum = checksum(memoryview(frame)[start:])
                    frame[start + offset] = csum >> 8
                    frame[start + offset + 1] = csum & 0xFF
                    frames.append(bytes(frame))
                else:
                    frames.append(raw[VNET_LEN:])
        except BlockingIOError:
            pass
        return frames

    def _vnet_header(self, frame: bytes) -> tuple[bytes, bytes]:
        """The virtio header for a frame, and the frame (TCP super-frames made partial)."""
        n = len(frame)
        if n - 14 <= self.mtu or n < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            return _NO_VNET, frame
        ihl = (frame[14] & 0x0F) * 4
        start = 14 + ihl
        thl = (frame[start + 12] >> 4) * 4
        # Partial checksum: the pseudo-header sum in the field, the kernel adds the rest.
        tcp_len = n - start
        pseudo = csum_partial(_PSEUDO.pack(frame[26:30], frame[30:34], 0, 6, tcp_len))
        buf = bytearray(frame)
        buf[start + 16] = pseudo >> 8
        buf[start + 17] = pseudo & 0xFF
        hdr = VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, start + thl,
                            self.mtu - ihl - thl, start, 16)
        return hdr, bytes(buf)

    def send(self, frame: bytes) -> None:
        try:
            if self.offload:
                hdr, frame = self._vnet_header(frame)
                os.writev(self.fileno(), (hdr, frame))
                return
            if self._gso_writer is not None and len(frame) > self.mtu + 14:
                written, dropped = self._gso_writer.write(self.fileno(), frame)
                if written or dropped:
                    self.gso_cut += 1
                    self.gso_frames += written
                    self.dropped += dropped
                    return
            os.write(self.fileno(), frame)
        except OSError as e:
            if e.errno not in _DROP_ERRNOS:
                raise
            self.dropped += 1

    def close(self) -> None:
        if self._fd < 0:
            return
        self._fd = -1
        self._dev.close()
        if self.created:
            self._remove()

    def _remove(self) -> None:
        # The device was not made persistent, so closing its only fd removes
        # it; make sure, and delete it by hand if something still holds it.
        for _ in range(50):
            if not interface_exists(self.name):
                return
            time.sleep(0.01)
        try:
            _ip("link", "del", "dev", self.name)
        except OSError:
            if interface_exists(self.name):
                raise
