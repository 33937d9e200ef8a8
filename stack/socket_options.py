"""``setsockopt`` and ``getsockopt`` of the facade: CPython's argument
parsing (an int, a buffer, or None with a length), then Linux's checks and
answers for the options every socket has; an endpoint's own options (TCP's
congestion control, MSS, TCP_INFO) are asked of the endpoint first.

Supported: SO_REUSEADDR, SO_KEEPALIVE, SO_BROADCAST, SO_OOBINLINE, SO_RCVBUF, SO_SNDBUF
(doubled and bounded as Linux), SO_LINGER, SO_ERROR, SO_TYPE, IP_TTL,
TCP_NODELAY, TCP_KEEPIDLE/INTVL/CNT, TCP_CONGESTION, TCP_MAXSEG (read
only), TCP_INFO (read only). SO_REUSEPORT is refused (ENOPROTOOPT): one
listener per address is all the TCP layer has. Anything else is ENOPROTOOPT.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

from stack.socket_base import (
    IP_TTL, IPPROTO_IP, IPPROTO_TCP, KEEPALIVE_LIMITS, SO_ERROR, SO_LINGER, SO_OOBINLINE, SO_RCVBUF,
    OPTION_DEFAULTS, SO_REUSEPORT, SO_SNDBUF, SO_TYPE, SOCK_STREAM, SOL_SOCKET, Endpoint, c_int,
    error,
)

BUF_MAX = 1 << 24       # the largest SO_RCVBUF/SO_SNDBUF taken (before doubling)
BUF_MIN = {SO_RCVBUF: 2304, SO_SNDBUF: 4608}  # Linux's SOCK_MIN_RCVBUF / SOCK_MIN_SNDBUF
_LINGER = struct.Struct("ii")


def _value(value: Any, optlen: int | None) -> tuple[int | None, bytes | None]:
    """``value`` as CPython parses it: (the int, None) or (its first four
    bytes as an int if there are four, the bytes)."""
    if value is None:
        if optlen is None:
            raise TypeError("a bytes-like object is required, not 'NoneType'")
        raise error(errno.EFAULT)  # a NULL option value
    if isinstance(value, int):
        try:
            return c_int(value), None
        except OverflowError:
            raise TypeError("a bytes-like object is required, not 'int'") from None
    try:
        raw = bytes(memoryview(value))
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'") \
            from None
    return (int.from_bytes(raw[:4], "little", signed=True) if len(raw) >= 4 else None), raw


def _kind_check(ep: Endpoint, level: int) -> None:
    if level == IPPROTO_TCP and ep.kind != SOCK_STREAM:
        raise error(errno.EOPNOTSUPP)  # as Linux for TCP options on a UDP socket


def set_option(ep: Endpoint, level: int, option: int, value: Any, optlen: int | None) -> None:
    _kind_check(ep, level)
    if ep.set_option(level, option, value):
        return
    ival, raw = _value(value, optlen)
    key = (level, option)
    if key == (SOL_SOCKET, SO_LINGER):
        if raw is None or len(raw) < _LINGER.size:
            raise error(errno.EINVAL)
        onoff, secs = _LINGER.unpack_from(raw)
        ep.linger = (onoff, secs)
        return
    if ival is None:
        raise error(errno.EINVAL)  # shorter than an int
    if key == (IPPROTO_IP, IP_TTL):
        if ival != -1 and not 1 <= ival <= 255:
            raise error(errno.EINVAL)
        ep.ttl = None if ival == -1 else ival
    elif key == (SOL_SOCKET, SO_REUSEPORT) or key not in OPTION_DEFAULTS:
        raise error(errno.ENOPROTOOPT)
    else:
        if level == IPPROTO_TCP and option in KEEPALIVE_LIMITS:
            if not 1 <= ival <= KEEPALIVE_LIMITS[option]:
                raise error(errno.EINVAL)
        if level == SOL_SOCKET and option in BUF_MIN:
            # Linux doubles the request (bookkeeping overhead), within bounds;
            # a negative one is a huge unsigned one.
            ival = max(BUF_MIN[option], (BUF_MAX if ival < 0 else min(ival, BUF_MAX)) * 2)
            if option == SO_RCVBUF:
                ep.rcvbuf_set = True
            else:
                ep.sndbuf_set = True
        if key == (SOL_SOCKET, SO_OOBINLINE):
            ival = 1 if ival else 0  # a flag: Linux reads back 0 or 1
        ep.opts[key] = ival
    ep.apply_options()


def get_option(ep: Endpoint, level: int, option: int, buflen: int | None) -> Any:
    if buflen is not None:
        buflen = c_int(buflen)
        if buflen == 0:
            buflen = None  # as CPython: read an int
        elif not 0 < buflen <= 1024:
            raise OSError("getsockopt buflen out of range")
    _kind_check(ep, level)
    value = ep.get_option(level, option, buflen)
    if value is not NotImplemented:
        return value
    key = (level, option)
    if key == (SOL_SOCKET, SO_LINGER):
        raw = _LINGER.pack(*ep.linger)
        return ep.linger[0] if buflen is None else raw[:buflen]
    if key == (SOL_SOCKET, SO_ERROR):
        value = ep.take_error() or 0
    elif key == (SOL_SOCKET, SO_TYPE):
        value = ep.kind
    elif key == (IPPROTO_IP, IP_TTL):
        value = ep.ttl or ep.net.ip.default_ttl
    elif key == (SOL_SOCKET, SO_REUSEPORT):
        value = 0
    elif key in OPTION_DEFAULTS:
        value = ep.opts[key]
    else:
        raise error(errno.ENOPROTOOPT)
    if buflen is not None:
        return value.to_bytes(4, "little", signed=True)[:buflen]
    return value
