"""BOOTP/DHCP messages (RFC 2131 section 2, options from RFC 2132).

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   +---------------+---------------+---------------+---------------+
   |     op (1)    |   htype (1)   |   hlen (1)    |   hops (1)    |
   |                            xid (4)                            |
   |           secs (2)            |           flags (2)           |
   |          ciaddr, yiaddr, siaddr, giaddr (4 each)              |
   |          chaddr (16), sname (64), file (128)                  |
   |          magic cookie 99.130.83.99, then the options          |
   +---------------------------------------------------------------+

An option is ``code, length, value`` except PAD (0) and END (255). Parsing
checks the fixed part, the cookie and every option's length (those this
client reads also their value's shape) and raises :class:`DhcpError`
naming what was wrong. A message holds at most :data:`MAX_OPTIONS`
options and :data:`MAX_MESSAGE` bytes: a peer cannot make one cost more.
Option overload (52: more options in ``sname``/``file``) is not followed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from stack.wire import WireError

BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHERNET = 1
MAGIC = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
SERVER_PORT, CLIENT_PORT = 67, 68

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
              ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}

# Option codes.
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_HOST_NAME = 12
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_SIZE = 57
OPT_T1 = 58
OPT_T2 = 59
OPT_CLIENT_ID = 61
OPT_END = 255

FIXED = struct.Struct("!BBBBIHHIIII16s64s128s")
FIXED_LEN = FIXED.size  # 236
MIN_LEN = FIXED_LEN + len(MAGIC)
BOOTP_MIN = 300         # what we pad our messages to (RFC 1542 2.1: some relays need it)
MAX_MESSAGE = 1500      # bytes; a reply longer than one Ethernet frame's payload is refused
MAX_OPTIONS = 64        # options in one message (PAD not counted)

# The options read as addresses: (exact length 4) or (a non-empty list of them).
_ONE_ADDRESS = {OPT_SUBNET_MASK, OPT_REQUESTED_IP, OPT_SERVER_ID}
_ADDRESS_LIST = {OPT_ROUTER, OPT_DNS}
_SECONDS = {OPT_LEASE_TIME, OPT_T1, OPT_T2}


class DhcpError(WireError):
    """A DHCP message that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    op: int
    xid: int
    chaddr: bytes                    # the client's MAC (6 bytes)
    msg_type: int | None = None      # option 53; None for plain BOOTP
    secs: int = 0
    flags: int = 0
    ciaddr: int = 0
    yiaddr: int = 0
    siaddr: int = 0
    giaddr: int = 0
    hops: int = 0
    # Every option but 53, PAD and END: code -> raw value, in the order met
    # (a code seen twice has its values joined, RFC 3396).
    options: dict[int, bytes] = field(default_factory=dict)

    # -- the options this client reads -------------------------------------

    def address(self, code: int) -> int | None:
        value = self.options.get(code)
        return int.from_bytes(value, "big") if value is not None else None

    def addresses(self, code: int) -> list[int]:
        value = self.options.get(code, b"")
        return [int.from_bytes(value[i:i + 4], "big") for i in range(0, len(value), 4)]

    def seconds(self, code: int) -> int | None:
        value = self.options.get(code)
        return int.from_bytes(value, "big") if value is not None else None

    @property
    def server_id(self) -> int | None:
        return self.address(OPT_SERVER_ID)

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.msg_type or 0, f"type{self.msg_type}")


def build_dhcp(m: DhcpMessage) -> bytes:
    """The message's bytes: fixed part, cookie, option 53 first, the other
    options in order, END, then PAD up to :data:`BOOTP_MIN` bytes."""
    if len(m.chaddr) > 16:
        raise ValueError("chaddr is at most 16 bytes")
    out = bytearray(FIXED.pack(m.op, HTYPE_ETHERNET, len(m.chaddr), m.hops, m.xid, m.secs,
                               m.flags, m.ciaddr, m.yiaddr, m.siaddr, m.giaddr,
                               m.chaddr, b"", b""))
    out += MAGIC
    if m.msg_type is not None:
        out += bytes([OPT_MESSAGE_TYPE, 1, m.msg_type])
    for code, value in m.options.items():
        if not 0 < code < 255:
            raise ValueError(f"option code {code} cannot be sent")
        for i in range(0, max(len(value), 1), 255):  # long values in pieces (RFC 3396)
            piece = value[i:i + 255]
            out += bytes([code, len(piece)]) + piece
    out.append(OPT_END)
    if len(out) < BOOTP_MIN:
        out += bytes(BOOTP_MIN - len(out))
    return bytes(out)


def parse_dhcp(data: bytes | memoryview) -> DhcpMessage:
    """Parse a BOOTP/DHCP message; raises :class:`DhcpError` naming the bad field."""
    n = len(data)
    if n < MIN_LEN:
        raise DhcpError("length", f"{n} bytes, at least {MIN_LEN}")
    if n > MAX_MESSAGE:
        raise DhcpError("length", f"{n} bytes, at most {MAX_MESSAGE}")
    data = bytes(data)
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
     chaddr, _sname, _file) = FIXED.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpError("op", str(op))
    if htype != HTYPE_ETHERNET or hlen != 6:
        raise DhcpError("htype", f"hardware type {htype} length {hlen}, not Ethernet's 1/6")
    if data[FIXED_LEN:MIN_LEN] != MAGIC:
        raise DhcpError("magic", data[FIXED_LEN:MIN_LEN].hex())
    msg_type, options = _parse_options(data, MIN_LEN)
    return DhcpMessage(op=op, xid=xid, chaddr=chaddr[:6], msg_type=msg_type, secs=secs,
                       flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr,
                       hops=hops, options=options)


def _parse_options(data: bytes, i: int) -> tuple[int | None, dict[int, bytes]]:
    n = len(data)
    options: dict[int, bytes] = {}
    msg_type: int | None = None
    count = 0
    while True:
        if i >= n:
            raise DhcpError("options", "no END option")
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            break
        if i + 1 >= n:
            raise DhcpError("options", f"option {code} cut off before its length")
        length = data[i + 1]
        if i + 2 + length > n:
            raise DhcpError("options", f"option {code} length {length} runs past the end")
        count += 1
        if count > MAX_OPTIONS:
            raise DhcpError("options", f"more than {MAX_OPTIONS} options")
        value = data[i + 2:i + 2 + length]
        i += 2 + length
        if code == OPT_MESSAGE_TYPE:
            if length != 1 or not DISCOVER <= value[0] <= INFORM or msg_type is not None:
                raise DhcpError("message_type", value.hex() or "empty")
            msg_type = value[0]
            continue
        options[code] = options.get(code, b"") + value
    for code, value in options.items():
        _check(code, value)
    return msg_type, options


def _check(code: int, value: bytes) -> None:
    """The shape of an option this client reads (after joining its pieces)."""
    if code in _ONE_ADDRESS and len(value) != 4:
        raise DhcpError(f"option{code}", f"{len(value)} bytes, an address is 4")
    if code in _ADDRESS_LIST and (not value or len(value) % 4):
        raise DhcpError(f"option{code}", f"{len(value)} bytes, not a list of addresses")
    if code in _SECONDS and len(value) != 4:
        raise DhcpError(f"option{code}", f"{len(value)} bytes, a time is 4")
    if code in (OPT_HOST_NAME, OPT_PARAMETER_LIST) and not value:
        raise DhcpError(f"option{code}", "empty")
    if code == OPT_CLIENT_ID and len(value) < 2:
        raise DhcpError(f"option{code}", f"{len(value)} bytes, at least 2")
