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

The fd is non-blocking. ``recv_batch`` reads until the kernel queue is empty
or ``limit`` frames were read; ``send`` writes one frame and counts, rather
than raises, the errors that mean "not now" (full queue, no buffers, the
interface is down) in ``dropped``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import subprocess
import time

from stack.link.base import Link

MAX_FRAME = 65535 + 14
# Errors of a write that lose one frame without anything being broken.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM, errno.EIO, errno.ENETDOWN})


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

    def __init__(
        self, name: str = "tap0", host_address: str | None = None, mtu: int | None = 1500
    ) -> None:
        import pytun  # imported here so the rest of stack.link works without it

        _check_name(name)
        if host_address is not None:
            ipaddress.ip_interface(host_address)  # ValueError on a bad CIDR
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ValueError(f"mtu must be between 68 and 65535, not {mtu}")
        self.name = name
        self.dropped = 0
        self.created = not interface_exists(name)
        try:
            self._dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TAP | pytun.IFF_NO_PI)
        except pytun.Error as e:  # an OSError; say which device it was about
            raise OSError(e.errno, f"cannot open TAP {name!r}: {e.strerror or e}") from None
        self._fd = self._dev.fileno()
        try:
            os.set_blocking(self._fd, False)
            if mtu is not None:
                self._dev.mtu = mtu
            self.mtu = self._dev.mtu
            if host_address is not None:
                _ip("addr", "replace", host_address, "dev", name)
                _ip("link", "set", "dev", name, "up")
        except BaseException:
            self.close()
            raise
        self.host_address = host_address

    @property
    def hwaddr(self) -> bytes:
        """The kernel side's MAC address."""
        return self._dev.hwaddr

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("I/O operation on closed link")
        return self._fd

    def recv_batch(self, limit: int = 64) -> list[bytes]:
        fd = self.fileno()
        read = os.read
        frames: list[bytes] = []
        append = frames.append
        try:
            while len(frames) < limit:
                frame = read(fd, MAX_FRAME)
                if not frame:
                    break
                append(frame)
        except BlockingIOError:
            pass
        return frames

    def send(self, frame: bytes) -> None:
        try:
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
