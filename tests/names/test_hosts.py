"""The hosts table: a hosts file read as glibc reads it, ``hosts=`` entries
that win, ``localhost`` always; and the name functions over a hosts file
compared with the real ones given the same file as /etc/hosts (in a private
mount and network namespace, so the real resolver reads it and asks no
one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from stack import Stack
from stack.names import Names
from stack.names_hosts import HostEntry, HostsTable, hosts_dict, parse_hosts

HOSTS = """\
127.0.0.1 localhost
127.0.0.1 runsc vm    # this machine's names, kept
# a comment line
192.0.2.10 multi.test  alias1 ALIAS2 # trailing comment
192.0.2.11 multi.test other
192.0.2.13\tTabbed.Test\t
::ffff:192.0.2.14 mapped.test
::1 ip6-localhost ip6-loopback
fe80::1 linklocal.test
192.0.2.12
bad.address.line x.test
10.1 short.test
010.0.0.1 octal.test
192.0.2.10 again.test
"""


def test_a_hosts_file_as_glibc_reads_it_for_ipv4():
    assert parse_hosts(HOSTS) == [
        HostEntry("127.0.0.1", "localhost"),
        HostEntry("127.0.0.1", "runsc", ("vm",)),
        HostEntry("192.0.2.10", "multi.test", ("alias1", "ALIAS2")),
        HostEntry("192.0.2.11", "multi.test", ("other",)),
        HostEntry("192.0.2.13", "Tabbed.Test"),
        HostEntry("192.0.2.14", "mapped.test"),
        HostEntry("127.0.0.1", "ip6-localhost", ("ip6-loopback",)),
        HostEntry("192.0.2.10", "again.test"),
    ]


def test_forward_and_reverse_lookups():
    table = HostsTable(system=parse_hosts(HOSTS))
    assert table.addresses("MULTI.test") == (["192.0.2.10", "192.0.2.11"], "multi.test")
    assert table.addresses("alias2") == (["192.0.2.10"], "multi.test")
    assert table.byname("multi.test") == ("multi.test", ["alias1", "ALIAS2", "other"],
                                          ["192.0.2.10", "192.0.2.11"])
    assert table.byaddr("192.0.2.10") == ("multi.test", ["alias1", "ALIAS2"])
    assert table.byaddr("127.0.0.1") == ("localhost", [])
    assert table.addresses("x.test") is None and table.byaddr("192.0.2.99") is None


def test_user_entries_win_and_localhost_is_always_there():
    table = HostsTable({"multi.test": "198.51.100.1", "Mine.Test": "198.51.100.2"},
                       parse_hosts("192.0.2.10 multi.test\n"))
    assert table.addresses("multi.test") == (["198.51.100.1"], "multi.test")
    assert table.addresses("mine.test") == (["198.51.100.2"], "Mine.Test")
    assert table.byaddr("198.51.100.2") == ("Mine.Test", [])
    assert table.byaddr("192.0.2.10") == ("multi.test", [])  # the system's, for its address
    assert table.addresses("localhost") == (["127.0.0.1"], "localhost")
    assert table.byaddr("127.0.0.1") == ("localhost", [])
    assert HostsTable({"localhost": "192.0.2.5"}).addresses("localhost") == (["192.0.2.5"],
                                                                            "localhost")


@pytest.mark.parametrize("bad", [{"x.test": "1.2.3"}, {"x.test": "::1"}, {"a b": "1.2.3.4"},
                                 {"": "1.2.3.4"}, {"x.test": 5}])
def test_bad_user_entries_are_refused(bad):
    with pytest.raises(ValueError, match="hosts"):
        HostsTable(bad)


def test_a_hosts_file_becomes_user_entries():
    assert hosts_dict(parse_hosts(HOSTS))["multi.test"] == "192.0.2.10"
    assert hosts_dict(parse_hosts(HOSTS))["other"] == "192.0.2.11"


def test_stack_takes_hosts_and_refuses_bad_dns_servers():
    a, b = Stack.pair(thread=False, hosts={"db.test": "192.0.2.40"})
    try:
        assert a.gethostbyname("db.test") == "192.0.2.40"
    finally:
        a.close()
        b.close()
    with pytest.raises(ValueError, match="dns"):
        Names(a, dns=["not-an-address"])


# ---- the same file, the real functions -----------------------------------------------------

CALLS = [
    ("getaddrinfo", ["multi.test", 80, 2, 1, 0, 2]), ("getaddrinfo", ["ALIAS2", 80, 2, 1, 0, 2]),
    ("getaddrinfo", ["other", 80, 2, 1]), ("getaddrinfo", ["tabbed.test", 80, 2, 1, 0, 2]),
    ("getaddrinfo", ["mapped.test", 80, 2, 1]), ("getaddrinfo", ["short.test", 80, 2, 1]),
    ("getaddrinfo", ["octal.test", 80, 2, 1]), ("getaddrinfo", ["linklocal.test", 80, 2, 1]),
    ("getaddrinfo", ["ip6-loopback", 80, 2, 1, 0, 2]), ("getaddrinfo", ["vm", None, 2]),
    ("gethostbyname", ["alias1"]), ("gethostbyname", ["again.test"]),
    ("gethostbyname_ex", ["multi.test"]), ("gethostbyname_ex", ["alias1"]),
    ("gethostbyname_ex", ["vm"]), ("gethostbyname_ex", ["ip6-localhost"]),
    ("gethostbyname_ex", ["mapped.test"]), ("gethostbyaddr", ["192.0.2.10"]),
    ("gethostbyaddr", ["192.0.2.11"]), ("gethostbyaddr", ["192.0.2.13"]),
    ("gethostbyaddr", ["192.0.2.14"]), ("gethostbyaddr", ["127.0.0.1"]),
    ("gethostbyaddr", ["vm"]), ("gethostbyaddr", ["alias1"]),
    ("getnameinfo", [["192.0.2.10", 53], 16]), ("getnameinfo", [["192.0.2.13", 22], 2]),
    ("getnameinfo", [["192.0.2.10", 80], 4]), ("getfqdn", ["192.0.2.10"]),
    ("getfqdn", ["192.0.2.13"]), ("getfqdn", [" alias1 "]), ("getfqdn", ["vm"]),
    ("getfqdn", ["localhost"]),
]

RUNNER = textwrap.dedent("""
    import json, socket, sys
    def call(fn, args):
        if fn == "getnameinfo":
            args = [tuple(args[0]), args[1]]
        try:
            r = getattr(socket, fn)(*args)
        except Exception as e:
            return [type(e).__name__, list(e.args)]
        if fn == "getaddrinfo":
            r = [[int(f), int(t), p, c, list(sa)] for f, t, p, c, sa in r if f == socket.AF_INET]
        return r
    print(json.dumps([call(fn, args) for fn, args in json.loads(sys.argv[1])]))
""")


def _ours(names: Names, fn: str, args: list):
    if fn == "getnameinfo":
        args = [tuple(args[0]), args[1]]
    try:
        r = getattr(names, fn)(*args)
    except Exception as e:  # compared with what the real function raised
        return [type(e).__name__, list(e.args)]
    if fn == "getaddrinfo":
        r = [[int(f), int(t), p, c, list(sa)] for f, t, p, c, sa in r]
    return json.loads(json.dumps(r))


def test_the_name_functions_over_a_hosts_file_like_the_real_ones(netns, tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    os.chmod(tmp_path, 0o755)
    script = f"mount --bind {path} /etc/hosts && exec {sys.executable} -c \"$0\" \"$1\""
    r = subprocess.run(["unshare", "--mount", "--net", "sh", "-c", script, RUNNER,
                        json.dumps(CALLS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    real = json.loads(r.stdout)
    a, b = Stack.pair(thread=False)
    try:
        names = Names(a, hosts_file=str(path))
        ours = [_ours(names, fn, args) for fn, args in CALLS]
    finally:
        a.close()
        b.close()
    assert list(zip(CALLS, ours)) == list(zip(CALLS, real))
    assert sum(isinstance(x, list) and x and x[0] == "gaierror" for x in real) == 3  # not all errors
