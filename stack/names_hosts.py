"""The hosts table: the system's ``/etc/hosts`` plus ``Stack(hosts=...)``.

Read the way glibc's ``files`` backend reads it for IPv4 (``hosts(5)``):
``#`` starts a comment, fields are separated by white space, the first is
the address, the second the canonical name, the rest aliases; names match
without regard to case. An address must be a strict dotted quad; of the
IPv6 lines only ``::1`` (as 127.0.0.1) and ``::ffff:a.b.c.d`` (as a.b.c.d)
count, as glibc counts them for an IPv4 lookup. Lines without a name are
skipped.

The ``hosts=`` entries (``{name: address}``, ``--hosts FILE`` read into
one) win: a name they hold is answered from them alone. ``localhost`` is
127.0.0.1 even when no table says so.
"""

from __future__ import annotations

import socket
from typing import NamedTuple

from stack.names_gai import inet_pton4, v4_mapped

SYSTEM_HOSTS = "/etc/hosts"
LOCALHOST = "127.0.0.1"


class HostEntry(NamedTuple):
    address: str
    name: str
    aliases: tuple[str, ...] = ()


def _address(text: str) -> str | None:
    v4 = inet_pton4(text)
    if v4 is not None:
        return v4
    try:
        raw = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return None
    if raw == bytes(15) + b"\x01":
        return LOCALHOST
    return v4_mapped(raw)


def parse_hosts(text: str) -> list[HostEntry]:
    """The IPv4 entries of a hosts file, in its order."""
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = _address(fields[0])
        if address is not None:
            out.append(HostEntry(address, fields[1], tuple(fields[2:])))
    return out


def read_hosts_file(path: str) -> list[HostEntry]:
    """A hosts file's entries; raises OSError or UnicodeError when it cannot be read."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_hosts(f.read())


def hosts_dict(entries: list[HostEntry]) -> dict[str, str]:
    """``{name: address}`` for ``Stack(hosts=...)``: every name and alias, the
    first line that holds it winning (as ``gethostbyname`` answers)."""
    out: dict[str, str] = {}
    for e in entries:
        for name in (e.name, *e.aliases):
            out.setdefault(name, e.address)
    return out


class HostsTable:
    """Forward and reverse lookups in the user's entries, then the system's."""

    def __init__(self, user: dict[str, str] | None = None,
                 system: list[HostEntry] | None = None) -> None:
        self.user: list[HostEntry] = []
        for name, address in (user or {}).items():
            v4 = inet_pton4(address) if isinstance(address, str) else None
            if v4 is None or not isinstance(name, str) or not name or name.split() != [name]:
                raise ValueError(f"hosts: {name!r}: {address!r} is not a name and an "
                                 "IPv4 address (a.b.c.d)")
            self.user.append(HostEntry(v4, name))
        self._user_names = {e.name.lower() for e in self.user}
        self.system = list(system or [])

    @classmethod
    def with_system(cls, user: dict[str, str] | None, path: str = SYSTEM_HOSTS) -> "HostsTable":
        """The user's entries over the system file (none if it cannot be read)."""
        try:
            system = read_hosts_file(path)
        except (OSError, UnicodeError):
            system = []
        return cls(user, system)

    def _matching(self, name: str) -> list[HostEntry]:
        key = name.lower()
        table = self.user if key in self._user_names else self.system
        return [e for e in table
                if e.name.lower() == key or any(a.lower() == key for a in e.aliases)]

    def addresses(self, name: str) -> tuple[list[str], str] | None:
        """getaddrinfo's view: every address of ``name`` and the canonical name."""
        found = self._matching(name)
        if not found:
            if name.lower() == "localhost":
                return [LOCALHOST], "localhost"
            return None
        return [e.address for e in found], found[0].name

    def byname(self, name: str) -> tuple[str, list[str], list[str]] | None:
        """gethostbyname_r's view with ``multi on`` (Debian's host.conf): the
        first line's names, then every other line's aliases and names."""
        found = self._matching(name)
        if not found:
            if name.lower() == "localhost":
                return "localhost", [], [LOCALHOST]
            return None
        first = found[0]
        aliases = list(first.aliases)
        for e in found[1:]:
            aliases += e.aliases
            if e.name != first.name:
                aliases.append(e.name)
        return first.name, aliases, [e.address for e in found]

    def byaddr(self, address: str) -> tuple[str, list[str]] | None:
        """gethostbyaddr_r's view: the first line for ``address``."""
        for e in (*self.user, *self.system):
            if e.address == address:
                return e.name, list(e.aliases)
        if address == LOCALHOST:
            return "localhost", []
        return None
