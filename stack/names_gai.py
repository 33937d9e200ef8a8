"""The letter of ``getaddrinfo``: how CPython converts its arguments and how
glibc (2.36, Debian 12) reads hosts, services, types and flags.

These are the parts of :mod:`stack.names` that need no network: argument
checks that raise what CPython raises, the numeric address forms glibc
accepts (``inet_aton``'s: ``127.1``, ``0x7f.1``, ``2130706433``), the
numeric service rule (``strtoul``), the socket types a service expands to
(glibc's ``gaih_inet_typeproto`` table, ``SOCK_RAW`` included), and the
host-name check glibc makes before it asks DNS (``res_hnok``). Each rule was
taken from the real ``socket.getaddrinfo`` on the same inputs;
``tests/names/test_getaddrinfo_contract.py`` keeps them equal.
"""

from __future__ import annotations

import operator
import re
import socket
from typing import Any, NamedTuple

# glibc's gai_strerror and hstrerror texts (what socket.gaierror/herror carry).
GAI_MESSAGES = {
    socket.EAI_BADFLAGS: "Bad value for ai_flags",
    socket.EAI_NONAME: "Name or service not known",
    socket.EAI_AGAIN: "Temporary failure in name resolution",
    socket.EAI_FAIL: "Non-recoverable failure in name resolution",
    socket.EAI_NODATA: "No address associated with hostname",
    socket.EAI_FAMILY: "ai_family not supported",
    socket.EAI_SOCKTYPE: "ai_socktype not supported",
    socket.EAI_SERVICE: "Servname not supported for ai_socktype",
    socket.EAI_ADDRFAMILY: "Address family for hostname not supported",
}
HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA = 1, 2, 3, 4
H_MESSAGES = {HOST_NOT_FOUND: "Unknown host", TRY_AGAIN: "Host name lookup failure",
              NO_RECOVERY: "Unknown server error", NO_DATA: "No address associated with name"}
# The h_errno a failed DNS lookup leaves for gethostbyname_r / gethostbyaddr_r.
H_ERRNO = {socket.EAI_NONAME: HOST_NOT_FOUND, socket.EAI_AGAIN: TRY_AGAIN,
           socket.EAI_FAIL: NO_RECOVERY, socket.EAI_NODATA: NO_DATA}

# Every AI_* flag glibc knows (AI_IDN and its deprecated companions included).
AI_KNOWN = 0x7FF
NI_KNOWN = 0xFF
INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1


def gaierror(code: int) -> socket.gaierror:
    return socket.gaierror(code, GAI_MESSAGES.get(code, "Unknown error"))


def herror(code: int) -> socket.herror:
    return socket.herror(code, H_MESSAGES.get(code, "Resolver internal error"))


# ---- arguments, as CPython converts them --------------------------------------------


def c_int(value: Any) -> int:
    """An ``int`` argument of a C function ("i"): what CPython raises for others."""
    n = operator.index(value)
    if n > INT_MAX:
        raise OverflowError("signed integer is greater than maximum")
    if n < -INT_MAX - 1:
        raise OverflowError("signed integer is less than minimum")
    return n


def c_string(raw: bytes) -> str:
    """What C sees of ``raw``: up to the first NUL (Latin-1, so no byte is lost)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")


def host_arg(host: Any) -> str | None:
    """getaddrinfo's host: None, ``str`` (IDNA-encoded, as CPython does) or ``bytes``."""
    if host is None:
        return None
    if isinstance(host, str):
        return c_string(host.encode("idna"))
    if isinstance(host, bytes):
        return c_string(host)
    raise TypeError("getaddrinfo() argument 1 must be string or None")


def port_arg(port: Any) -> str | None:
    """getaddrinfo's port: None, an exact ``int``, ``str`` or ``bytes``."""
    if port is None:
        return None
    if type(port) is int:
        if not -LONG_MAX - 1 <= port <= LONG_MAX:
            raise OverflowError("Python int too large to convert to C long")
        return str(port)
    if isinstance(port, str):
        return c_string(port.encode("utf-8"))
    if isinstance(port, bytes):
        return c_string(port)
    raise OSError("Int or String expected")


def name_arg(func: str, name: Any) -> str:
    """The "et" argument of gethostbyname & co.: ``str`` (IDNA) or bytes, no NUL."""
    if isinstance(name, str):
        raw = name.encode("idna")
    elif isinstance(name, (bytes, bytearray)):
        raw = bytes(name)
    else:
        raise TypeError(f"{func}() argument 1 must be str, bytes or bytearray, "
                        f"not {_type_name(name)}")
    if b"\0" in raw:
        raise TypeError(f"{func}() argument 1 must be encoded string without null bytes, "
                        f"not {_type_name(name)}")
    return raw.decode("latin-1")


def _type_name(value: Any) -> str:
    """How CPython's argument errors name a type (None is "None")."""
    return "None" if value is None else type(value).__name__


# ---- numbers ------------------------------------------------------------------------------

_MAX_LAST = (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)


def _strtoul0(text: str) -> int | None:
    """One part of an inet_aton address: C's ``strtoul(part, &end, 0)`` that
    must consume the part (0x hex, 0 octal, decimal), starting with a digit."""
    if not text or not text[0].isdigit() or not text.isascii():
        return None
    try:
        if text[:2] in ("0x", "0X"):
            return int(text[2:], 16) if text[2:] and text[2:].isalnum() else None
        if text[0] == "0":
            return int(text, 8) if text.isdigit() else None
        return int(text, 10) if text.isdigit() else None
    except ValueError:
        return None


def inet_aton(text: str) -> str | None:
    """glibc's ``__inet_aton_exact``: ``a``, ``a.b``, ``a.b.c`` or ``a.b.c.d``
    with each part in C notation; the dotted quad, or None."""
    parts = text.split(".")
    if len(parts) > 4:
        return None
    values = [_strtoul0(p) for p in parts]
    if any(v is None for v in values):
        return None
    nums = [v for v in values if v is not None]
    if any(v > 0xFF for v in nums[:-1]) or nums[-1] > _MAX_LAST[len(nums) - 1]:
        return None
    value = nums[-1]
    for i, v in enumerate(nums[:-1]):
        value |= v << (24 - 8 * i)
    return socket.inet_ntoa(value.to_bytes(4, "big"))


def inet_pton4(text: str) -> str | None:
    """A strict dotted quad (what hosts files and getnameinfo's host take)."""
    try:
        return socket.inet_ntoa(socket.inet_pton(socket.AF_INET, text))
    except (OSError, UnicodeError, ValueError):
        return None


def ipv6_literal(text: str) -> bytes | None:
    """The 16 bytes of an IPv6 literal (a ``%scope`` suffix aside), or None."""
    try:
        return socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
    except (OSError, UnicodeError, ValueError):
        return None


def v4_mapped(raw: bytes) -> str | None:
    """``::ffff:a.b.c.d`` -> ``a.b.c.d``."""
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntoa(raw[12:])
    return None


def numeric_service(text: str) -> int | None:
    """glibc reads a service with ``strtoul(s, &end, 10)`` into an ``int``:
    numeric when that consumes it all (spaces and a sign allowed in front);
    returns the number as C's int sees it (negative: looked up as a name)."""
    i, n = 0, len(text)
    while i < n and text[i] in " \t\n\v\f\r":
        i += 1
    negative = i < n and text[i] == "-"
    if i < n and text[i] in "+-":
        i += 1
    digits = text[i:]
    if not digits or not digits.isdigit() or not digits.isascii():
        return None
    value = min(int(digits), 2**64 - 1)
    if negative and value != 2**64 - 1:
        value = -value % 2**64
    value &= 0xFFFFFFFF
    return value - 2**32 if value > INT_MAX else value


# ---- socket types and services ----------------------------------------------------------

PROTOANY, NOSERVICE = 1, 2


class TypeProto(NamedTuple):
    socktype: int
    protocol: int
    flags: int
    default: bool     # listed when neither type nor protocol was asked for
    name: str         # the protocol's name in the services database


# glibc's gaih_inet_typeproto, in its order.
TYPEPROTO = (
    TypeProto(socket.SOCK_STREAM, socket.IPPROTO_TCP, 0, True, "tcp"),
    TypeProto(socket.SOCK_DGRAM, socket.IPPROTO_UDP, 0, True, "udp"),
    TypeProto(6, 33, 0, False, "dccp"),                       # SOCK_DCCP, IPPROTO_DCCP
    TypeProto(socket.SOCK_DGRAM, 136, 0, False, "udplite"),   # IPPROTO_UDPLITE
    TypeProto(socket.SOCK_STREAM, 132, 0, False, "sctp"),     # IPPROTO_SCTP
    TypeProto(socket.SOCK_SEQPACKET, 132, 0, False, "sctp"),
    TypeProto(socket.SOCK_RAW, 0, PROTOANY | NOSERVICE, True, "raw"),
)


def service_port(name: str, proto: str) -> int | None:
    """The services database's port for ``name``/``proto``, or None."""
    if not name.isascii():
        return None
    try:
        return socket.getservbyname(name, proto)
    except OSError:
        return None


def socket_entries(service: str | None, socktype: int, proto: int) -> list[tuple[int, int, int]]:
    """``(socktype, protocol, port)`` for each result of one address, as
    glibc's gaih_inet builds them; raises EAI_SOCKTYPE or EAI_SERVICE."""
    tp: TypeProto | None = None
    if socktype or proto:
        tp = next((t for t in TYPEPROTO
                   if (not socktype or socktype == t.socktype)
                   and (not proto or t.flags & PROTOANY or proto == t.protocol)), None)
        if tp is None:
            raise gaierror(socket.EAI_SOCKTYPE if socktype else socket.EAI_SERVICE)
    port = 0
    if service:  # an empty service is no service (port 0)
        if tp is not None and tp.flags & NOSERVICE:
            raise gaierror(socket.EAI_SERVICE)
        num = numeric_service(service)
        if num is None or num < 0:
            return _named_service(service, tp, proto)
        port = num & 0xFFFF
    if tp is not None:
        return [(tp.socktype, proto if tp.flags & PROTOANY else tp.protocol, port)]
    return [(t.socktype, t.protocol, port) for t in TYPEPROTO if t.default]


def _named_service(service: str, tp: TypeProto | None, proto: int) -> list[tuple[int, int, int]]:
    kinds = [tp] if tp is not None else [t for t in TYPEPROTO if not t.flags & NOSERVICE]
    out = []
    for t in kinds:
        port = service_port(service, t.name)
        if port is not None:
            out.append((t.socktype, proto if t.flags & PROTOANY else t.protocol, port))
    if not out:
        raise gaierror(socket.EAI_SERVICE)
    return out


def service_name(port: int, dgram: bool) -> str:
    """getnameinfo's service: the database's name for ``port``, else the number."""
    try:
        return socket.getservbyport(port, "udp" if dgram else "tcp")
    except (OSError, OverflowError):
        return str(port)


# ---- names DNS may be asked about -----------------------------------------------------------


def digits_dots(name: str) -> bool:
    """Only digits and dots, not ending in a dot: glibc's gethostbyname
    family answers such a name itself (``__nss_hostname_digits_dots``): an
    address if inet_aton takes it, else "not found", without asking DNS."""
    return bool(name) and name.isascii() and all(c.isdigit() or c == "." for c in name) \
        and not name.endswith(".")


def hostname_ok(name: str) -> bool:
    """glibc's ``res_hnok``, which a name must pass before it goes to DNS:
    printable, labels of letters, digits, ``-`` and ``_`` (1 to 63 bytes,
    none empty but a final one), at most 255 bytes on the wire, and the first
    label not starting with ``-``. (Backslash escapes are refused here.)"""
    if not name or any(not " " < c <= "~" for c in name) or "\\" in name:
        return False
    if name == ".":
        return True
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if sum(len(label) + 1 for label in labels) + 1 > 255 or labels[0].startswith("-"):
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")


def address_info(family: int, socktype: int) -> tuple[Any, Any]:
    """The family and type as the socket module hands them out (its enums)."""
    try:
        kind: Any = socket.SocketKind(socktype)
    except ValueError:
        kind = socktype
    return socket.AddressFamily(family), kind
