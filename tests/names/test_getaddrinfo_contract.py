"""The same inputs through the real ``socket`` functions and the stack's: the
results, or the exception class and its arguments, must be equal.

Every case needs no DNS answer: numeric hosts, flags, services, types,
errors, names in this machine's /etc/hosts, and names that go to DNS and
fail there. The stack has no DNS server (EAI_AGAIN, "Temporary failure"),
and neither has the real resolver: these tests run in the private network
namespace of the test run (the ``netns`` fixture), where the system's
name server cannot be reached, so no query leaves the machine. The real
results are filtered to their IPv4 entries (the stack has no IPv6).
"""

from __future__ import annotations

import socket

import pytest

from stack import Stack

S = socket
STREAM, DGRAM, RAW, SEQ = S.SOCK_STREAM, S.SOCK_DGRAM, S.SOCK_RAW, S.SOCK_SEQPACKET

GAI_CASES = [
    # numeric hosts, every form glibc's inet_aton takes, and near misses
    ("127.0.0.1", 80), ("192.0.2.7", 8080), ("127.1", 80), ("0x7f.1", 80), ("2130706433", 80),
    ("010.0.0.1", 80), ("1.2.3", 80), ("1.16777215", 80), ("1.2.65535", 80), ("0", 80),
    ("0x0", 80), ("0xffffffff", 80), ("4294967295", 80), ("255.255.255.255", 80),
    ("0.0.0.0", 80), ("01.2.3.4", 80), ("0x1.0x2.0x3.0x4", 80),
    ("1.2.3.256", 80, 0, 0, 0, S.AI_NUMERICHOST), ("4294967296", 80, 0, 0, 0, S.AI_NUMERICHOST),
    ("1.2.3.4 ", 80, 0, 0, 0, S.AI_NUMERICHOST), ("1.16777216", 80), ("256.1", 80),
    ("1.2.3.4.5", 80), ("1.2.65536", 80), (" 1.2.3.4", 80), ("1.2.3.4%lo", 80),
    ("18446744073709551616", 80, 0, 0, 0, S.AI_NUMERICHOST),
    # digits and dots that are no address, asked for as AF_INET (what bind()
    # and connect() ask): glibc says "not found" without asking DNS
    ("256.1.1.1", 80, S.AF_INET), ("1.2.3.4.5", 80, S.AF_INET), ("1.2.3.256", None, S.AF_INET),
    (b"127.0.0.1", 80), ("127.0.0.1\0junk", 80), (b"127.0.0.1\0junk", 80),
    # IPv6 literals asked for as IPv4
    ("::1", 80, S.AF_INET), ("fe80::1%lo", 80, S.AF_INET), ("::ffff:1.2.3.4", 80, S.AF_INET),
    ("127.0.0.1", 80, S.AF_INET6),
    # no host, "*" and empty
    (None, 80), (None, 80, 0, 0, 0, S.AI_PASSIVE), (None, None), ("", 80), ("", None),
    ("*", 80), ("127.0.0.1", "*"), (None, ""), ("127.0.0.1", ""), ("127.0.0.1", b""),
    # ports: numbers, strings, strtoul's view of them, service names
    ("127.0.0.1", " 80"), ("127.0.0.1", "+80"), ("127.0.0.1", "-1"), ("127.0.0.1", -1),
    ("127.0.0.1", 65536), ("127.0.0.1", 70000), ("127.0.0.1", "4294967296"),
    ("127.0.0.1", "2147483648"), ("127.0.0.1", "-4294967216"),
    ("127.0.0.1", "18446744073709551616"), ("127.0.0.1", " "), ("127.0.0.1", "80 "),
    ("127.0.0.1", "0x50"), ("127.0.0.1", "http"), ("127.0.0.1", "domain"),
    ("127.0.0.1", "amqp"), ("127.0.0.1", "nosuch"), ("127.0.0.1", "echo"),
    ("127.0.0.1", "echo", 0, DGRAM), ("127.0.0.1", "http", 0, 0, 0, S.AI_NUMERICSERV),
    ("127.0.0.1", "80", 0, 0, 0, S.AI_NUMERICSERV), ("127.0.0.1", b"80"), ("127.0.0.1", "80\0x"),
    ("127.0.0.1", True), ("127.0.0.1", 80.0), ("127.0.0.1", bytearray(b"80")),
    ("127.0.0.1", 2**63), ("127.0.0.1", -2**63), ("127.0.0.1", "\udcff"),
    (None, "nosuch"), ("x.invalid", "nosuch"), ("", "nosuch"),
    # families, types, protocols
    ("127.0.0.1", 80, 99), ("127.0.0.1", 80, -1), ("127.0.0.1", 80, S.AF_UNIX),
    ("127.0.0.1", 80, True), ("127.0.0.1", 80, 0, 99), ("127.0.0.1", 80, 0, RAW),
    ("127.0.0.1", None, 0, RAW), ("127.0.0.1", 80, 0, 0, 132), ("127.0.0.1", None, 0, 0, 99),
    ("127.0.0.1", 80, 0, 0, 99), ("127.0.0.1", 80, 0, STREAM, S.IPPROTO_UDP),
    ("127.0.0.1", 80, 0, SEQ), ("127.0.0.1", "amqp", 0, SEQ), ("127.0.0.1", "http", 0, SEQ),
    ("127.0.0.1", 80, 0, 6), ("127.0.0.1", 80, 0, 0, 33), ("127.0.0.1", 80, 0, 0, 136),
    ("127.0.0.1", 80, 0, DGRAM, 136), ("127.0.0.1", "http", 0, 0, S.IPPROTO_UDP),
    ("127.0.0.1", "http", 0, RAW), ("127.0.0.1", None, 0, RAW, 6),
    ("127.0.0.1", None, 0, STREAM), ("127.0.0.1", 80, 0, STREAM | S.SOCK_NONBLOCK),
    ("127.0.0.1", 80, S.AF_INET, STREAM, S.IPPROTO_TCP),
    # flags
    ("127.0.0.1", 80, 0, 0, 0, 0x800), ("127.0.0.1", 80, 0, 0, 0, 0x7FF),
    ("127.0.0.1", 80, 0, 0, 0, -1), (None, 80, 0, 0, 0, S.AI_CANONNAME),
    (None, "http", 0, 0, 0, S.AI_NUMERICSERV | S.AI_CANONNAME),
    ("127.0.0.1", 80, 0, 0, 0, S.AI_CANONNAME), ("127.1", 80, S.AF_INET, 0, 0, S.AI_CANONNAME),
    ("127.0.0.1", 80, 0, 0, 0, S.AI_ADDRCONFIG | S.AI_V4MAPPED | S.AI_ALL),
    # names in /etc/hosts, and names that are not
    ("localhost", 80), ("LOCALHOST", 80, S.AF_INET), ("localhost", None, S.AF_INET),
    ("localhost", 80, 0, 0, 0, S.AI_CANONNAME), ("localhost", 80, 0, 0, 0, S.AI_NUMERICHOST),
    ("localhost", 80, S.AF_INET, STREAM, 0, S.AI_CANONNAME | S.AI_NUMERICHOST),
    ("localhost.", 80, S.AF_INET), ("a b", 80), ("a_b", 80), ("-a", 80), ("a-", 80),
    ("a.b-", 80), ("_srv.x", 80), ("a.", 80), ("a/b", 80), ("a*b", 80), ("*.a", 80),
    ("a\tb", 80), (b"a..b", 80), (b"\xff", 80), (b"a" * 64, 80), (b"x." * 130, 80),
    ("08.0.0.1", 80), ("0x", 80), ("1.2.3.4.", 80), ("1.2.3.-4", 80), ("1e3", 80),
    ("0x100000000", 80), ("bücher.test", 80), ("bücher.test", 80, 0, 0, 0, S.AI_NUMERICHOST),
    # what CPython refuses before glibc sees anything
    ("a..b", 80), (".", 80), ("a" * 64, 80), ("\udcff", 80), (1, 80),
    (bytearray(b"1.2.3.4"), 80), ("127.0.0.1", 80, "x"), ("127.0.0.1", 80, 2**40),
    ("127.0.0.1", 80, -2**40), ("127.0.0.1", 80, 2.0), ("127.0.0.1", 80, 0, "1"),
    ("127.0.0.1", 80, 0, 0, 0, 2**31),
]


def outcome(fn, *args):
    """What a call gives: its IPv4 results (plain ints), or the exception."""
    try:
        result = fn(*args)
    except Exception as e:  # the class and the arguments are the contract
        return type(e).__name__, e.args
    if isinstance(result, list):
        return [(int(f), int(t), p, c, sa) for f, t, p, c, sa in result if f == S.AF_INET]
    return result


@pytest.fixture(scope="module")
def net():
    a, b = Stack.pair(thread=False)
    yield a
    a.close()
    b.close()


@pytest.mark.parametrize("args", GAI_CASES, ids=repr)
def test_getaddrinfo_like_the_real_one(netns, net, args):
    real = outcome(socket.getaddrinfo, *args)
    assert outcome(net.getaddrinfo, *args) == real
    assert real != [], "a case must say something for IPv4"


def test_results_carry_the_socket_modules_enums(net):
    (family, kind, proto, canon, addr), *_ = net.getaddrinfo("127.0.0.1", 80)
    assert (repr(family), repr(kind), proto, canon, addr) == (
        "<AddressFamily.AF_INET: 2>", "<SocketKind.SOCK_STREAM: 1>", 6, "", ("127.0.0.1", 80))


def test_keywords_and_arity_are_the_socket_modules(net):
    assert net.getaddrinfo(host="127.0.0.1", port=80, type=STREAM) == \
        socket.getaddrinfo(host="127.0.0.1", port=80, type=STREAM)
    with pytest.raises(TypeError):
        net.getaddrinfo("127.0.0.1")


@pytest.mark.parametrize("fn", ["gethostbyname", "gethostbyname_ex"])
@pytest.mark.parametrize("name", [
    "localhost", "LocalHost", "127.0.0.1", "", "<broadcast>", "255.255.255.255", "1.2.3",
    "127.1", "0x7f.1", b"localhost", "bücher.invalid", "a\0b", b"a\0b", "::1", "localhost.",
    "a b", "x" * 64, 7, None,
])
def test_gethostbyname_like_the_real_one(netns, net, fn, name):
    assert outcome(getattr(net, fn), name) == outcome(getattr(socket, fn), name)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "localhost", "127.1", "", "x y", "1.2.3", "192.0.2.99", "0.0.0.0",
    "255.255.255.255", b"127.0.0.1", 3,
])
def test_gethostbyaddr_like_the_real_one(netns, net, address):
    assert outcome(net.gethostbyaddr, address) == outcome(socket.gethostbyaddr, address)


@pytest.mark.parametrize("sockaddr, flags", [
    (("127.0.0.1", 80), 0), (("127.0.0.1", 53), S.NI_DGRAM), (("127.0.0.1", 22), S.NI_NUMERICHOST),
    (("127.0.0.1", 22), S.NI_NUMERICSERV), (("127.0.0.1", 12345), 0), (("127.0.0.1", 70000), 0),
    (("127.0.0.1", -1), 0), (("127.0.0.1", 80, 0), 0), (["127.0.0.1", 80], 0),
    (("127.0.0.1",), 0), ((b"127.0.0.1", 80), 0), (("127.0.0.1", "80"), 0),
    (("127.0.0.1", 80), 0x10000), (("127.0.0.1", 80), 0x100), (("127.0.0.1", 2**31), 0),
    (("127.1", 80), 0), (("127.0.0.1\0", 80), 0), (("", 80), 0), (("127.0.0.1", 80), "x"),
    (("localhost", 80), 0), (("localhost", 80), 0x10000), (("192.0.2.99", 80), 0),
    (("192.0.2.99", 80), S.NI_NAMEREQD), (("192.0.2.99", 80), S.NI_NAMEREQD | S.NI_NUMERICHOST),
    (("127.0.0.1", 80), S.NI_NOFQDN), (("127.0.0.1", 80, 0, 0, 0), 0),
    (("127.0.0.1", 80, 2**20), 0), (("::1", 80, 0, 0), S.NI_NUMERICHOST),
])
def test_getnameinfo_like_the_real_one(netns, net, sockaddr, flags):
    real = outcome(socket.getnameinfo, sockaddr, flags)
    if sockaddr[0] == "::1":  # IPv6: the stack says so
        assert outcome(net.getnameinfo, sockaddr, flags) == (
            "gaierror", (S.EAI_ADDRFAMILY, "Address family for hostname not supported"))
        return
    assert outcome(net.getnameinfo, sockaddr, flags) == real


@pytest.mark.parametrize("name", ["", "localhost", "127.0.0.1", " localhost ", "0.0.0.0",
                                  "192.0.2.99", "nowhere.invalid", socket.gethostname()])
def test_getfqdn_like_the_real_one(netns, net, name):
    assert net.getfqdn(name) == socket.getfqdn(name)


@pytest.mark.parametrize("args, expected", [
    (("localhost", 80, S.AF_INET6), (S.EAI_NONAME, "Name or service not known")),
    ((None, 80, S.AF_INET6), (S.EAI_NONAME, "Name or service not known")),
    (("::1", 80), (S.EAI_ADDRFAMILY, "Address family for hostname not supported")),
    (("::ffff:1.2.3.4", 80, S.AF_INET6), (S.EAI_ADDRFAMILY,
                                          "Address family for hostname not supported")),
    (("127.0.0.1", "http", S.AF_INET6), (S.EAI_ADDRFAMILY,
                                         "Address family for hostname not supported")),
    (("127.0.0.1", "nosuch", S.AF_INET6), (S.EAI_SERVICE,
                                           "Servname not supported for ai_socktype")),
])
def test_ipv6_is_answered_as_on_a_host_without_it(net, args, expected):
    """The stack's own answers where an IPv6 host's libc would give IPv6 results."""
    with pytest.raises(socket.gaierror) as e:
        net.getaddrinfo(*args)
    assert e.value.args == expected


def test_an_ipv4_mapped_literal_is_ipv4_for_any_family(net):
    assert net.getaddrinfo("::ffff:1.2.3.4", 80, 0, STREAM) == [
        (S.AF_INET, STREAM, 6, "", ("1.2.3.4", 80))]
