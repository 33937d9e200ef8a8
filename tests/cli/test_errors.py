"""Every bad input through the real command: one ``stack: error:`` line, exit 2 or 1.

Each row runs ``python -m stack ARGS...`` as a subprocess of this tree and
expects: the exit status (2 for a bad flag, value or combination, 1 for a
resource that failed), stderr holding exactly one line, which starts with
``stack: error:`` and names the flag, nothing on stdout, and no traceback.

None of these needs a TAP: every check runs before the TAP is opened. (Should
one of them let its input through, the command would open a TAP in the test's
private namespace and run until the timeout, and the row fails.) The rows that
need a TAP (busy, permission denied, ...) are in ``test_errors_tap.py``.
"""

from __future__ import annotations


import pytest

from tests.helpers.cli import assert_one_error, run_stack

# A TAP name no other test uses: should a check miss, this is what would open.
UP = ("up", "--tap", "tclibad")


# (id, arguments after `stack up --tap tclibad`, exit status, what the line must name)
UP_CASES = [
    # --address: a CIDR with a prefix, a usable unicast address of its subnet
    ("address-no-prefix", ["--address", "192.0.2.2"], 2, ["--address", "prefix"]),
    ("address-garbage", ["--address", "banana/24"], 2, ["--address"]),
    ("address-prefix-33", ["--address", "192.0.2.2/33"], 2, ["--address"]),
    ("address-octet-300", ["--address", "192.0.2.300/24"], 2, ["--address"]),
    ("address-network", ["--address", "192.0.2.0/24"], 2, ["--address", "network address"]),
    ("address-broadcast", ["--address", "192.0.2.255/24"], 2, ["--address", "broadcast"]),
    ("address-slash-32", ["--address", "192.0.2.2/32"], 2, ["--address", "/32"]),
    ("address-multicast", ["--address", "224.0.0.5/24"], 2, ["--address", "unicast"]),
    ("address-loopback", ["--address", "127.0.0.2/8"], 2, ["--address", "loopback"]),
    ("address-zero", ["--address", "0.0.0.0/24"], 2, ["--address"]),
    # --address dhcp: the lease brings the gateway; a timeout in range
    ("dhcp-gateway", ["--address", "dhcp", "--gateway", "198.51.100.1"], 2,
     ["--gateway", "dhcp"]),
    ("dhcp-host-multicast", ["--address", "dhcp", "--host-address", "224.0.0.5/24"], 2,
     ["--host-address", "unicast"]),
    ("dhcp-timeout-zero", ["--address", "dhcp", "--dhcp-timeout", "0"], 2, ["--dhcp-timeout"]),
    ("dhcp-timeout-garbage", ["--address", "dhcp", "--dhcp-timeout", "soon"], 2,
     ["--dhcp-timeout"]),
    # --host-address: a different address on the same subnet
    ("host-no-prefix", ["--host-address", "192.0.2.1"], 2, ["--host-address", "prefix"]),
    ("host-same-as-stack", ["--host-address", "192.0.2.2/24"], 2, ["--host-address", "same"]),
    ("host-other-subnet", ["--host-address", "198.51.100.1/24"], 2,
     ["--host-address", "subnet"]),
    ("host-other-prefix", ["--host-address", "192.0.2.1/25"], 2, ["--host-address", "/25"]),
    ("host-network", ["--host-address", "192.0.2.0/24"], 2, ["--host-address", "network"]),
    ("host-broadcast", ["--host-address", "192.0.2.255/24"], 2,
     ["--host-address", "broadcast"]),
    # --gateway: an address on the stack's subnet, not its own
    ("gateway-garbage", ["--gateway", "gw.example"], 2, ["--gateway"]),
    ("gateway-with-prefix", ["--gateway", "192.0.2.1/24"], 2, ["--gateway"]),
    ("gateway-off-subnet", ["--gateway", "198.51.100.1"], 2, ["--gateway", "subnet"]),
    ("gateway-own-address", ["--gateway", "192.0.2.2"], 2, ["--gateway", "own"]),
    ("gateway-broadcast", ["--gateway", "192.0.2.255"], 2, ["--gateway", "broadcast"]),
    # --mtu 68..65535
    ("mtu-word", ["--mtu", "big"], 2, ["--mtu"]),
    ("mtu-fraction", ["--mtu", "1500.5"], 2, ["--mtu"]),
    ("mtu-too-small", ["--mtu", "67"], 2, ["--mtu", "68"]),
    ("mtu-negative", ["--mtu", "-1"], 2, ["--mtu"]),
    ("mtu-too-big", ["--mtu", "65536"], 2, ["--mtu", "65535"]),
    ("mtu-missing-value", ["--mtu"], 2, ["--mtu"]),
    # --tap
    ("tap-16-chars", ["--tap", "a" * 16], 2, ["--tap", "15"]),
    ("tap-slash", ["--tap", "a/b"], 2, ["--tap"]),
    ("tap-empty", ["--tap", ""], 2, ["--tap"]),
    # --mac: six bytes, unicast
    ("mac-broadcast", ["--mac", "ff:ff:ff:ff:ff:ff"], 2, ["--mac", "broadcast"]),
    ("mac-multicast", ["--mac", "01:00:5e:00:00:01"], 2, ["--mac", "multicast"]),
    ("mac-five-bytes", ["--mac", "02:53:c0:00:02"], 2, ["--mac"]),
    ("mac-not-hex", ["--mac", "02:53:c0:00:02:zz"], 2, ["--mac"]),
    ("mac-zero", ["--mac", "00:00:00:00:00:00"], 2, ["--mac"]),
    # --impair
    ("impair-probability", ["--impair", "loss=2"], 2, ["--impair", "loss"]),
    ("impair-unknown-key", ["--impair", "drop=0.1"], 2, ["--impair", "drop"]),
    ("impair-no-value", ["--impair", "loss"], 2, ["--impair"]),
    ("impair-negative-delay", ["--impair", "delay=-5"], 2, ["--impair", "delay"]),
    ("impair-bad-seed", ["--impair", "seed=x"], 2, ["--impair", "seed"]),
    # --serve
    ("serve-unknown", ["--serve", "gopher:70"], 2, ["--serve", "gopher"]),
    ("serve-no-port", ["--serve", "echo"], 2, ["--serve", "port"]),
    ("serve-port-word", ["--serve", "echo:seven"], 2, ["--serve", "port"]),
    ("serve-port-zero", ["--serve", "echo:0"], 2, ["--serve", "port"]),
    ("serve-port-too-big", ["--serve", "echo:65536"], 2, ["--serve", "port"]),
    ("serve-dir-not-http", ["--serve", "echo:7:/tmp"], 2, ["--serve", "directory"]),
    ("serve-two-on-one-port", ["--serve", "echo:7", "--serve", "http:7"], 2,
     ["--serve", "port 7"]),
    ("serve-http-dir-missing", ["--serve", "http:80:/nonexistent-dir"], 2,
     ["--serve", "/nonexistent-dir"]),
    # --congestion, --msl, --busy-poll, --trace-*
    ("congestion-unknown", ["--congestion", "vegas"], 2, ["--congestion", "vegas"]),
    ("loss-window-unknown", ["--loss-window", "half"], 2, ["--loss-window", "half"]),
    ("msl-zero", ["--msl", "0"], 2, ["--msl"]),
    ("msl-negative", ["--msl", "-1"], 2, ["--msl"]),
    ("msl-word", ["--msl", "long"], 2, ["--msl"]),
    ("msl-infinite", ["--msl", "inf"], 2, ["--msl"]),
    ("msl-nan", ["--msl", "nan"], 2, ["--msl"]),
    ("msl-too-long", ["--msl", "3601"], 2, ["--msl", "3600"]),
    ("busy-poll-negative", ["--busy-poll", "-1"], 2, ["--busy-poll"]),
    ("busy-poll-word", ["--busy-poll", "fast"], 2, ["--busy-poll"]),
    ("busy-poll-too-long", ["--busy-poll", "2000000"], 2, ["--busy-poll"]),
    ("trace-format", ["--trace-format", "xml"], 2, ["--trace-format", "xml"]),
    ("trace-level", ["--trace-level", "loud"], 2, ["--trace-level"]),
    ("trace-layers", ["--trace-layers", "tcp,bogus"], 2, ["--trace-layers", "bogus"]),
    ("unknown-flag", ["--bogus"], 2, ["--bogus"]),
    # output files that cannot be written: a resource, exit 1
    ("pcap-no-dir", ["--pcap", "/nonexistent-dir/cap.pcap"], 1, ["--pcap", "cannot write"]),
    ("pcap-is-dir", ["--pcap", "/tmp"], 1, ["--pcap", "cannot write"]),
    ("trace-no-dir", ["--trace", "/nonexistent-dir/t.jsonl"], 1, ["--trace", "cannot write"]),
    ("trace-is-dir", ["--trace", "/tmp"], 1, ["--trace", "cannot write"]),
]


@pytest.mark.parametrize("args,code,names", [c[1:] for c in UP_CASES],
                         ids=[c[0] for c in UP_CASES])
def test_stack_up_bad_input_is_one_error_line(args, code, names):
    assert_one_error(run_stack(*UP, *args), code, *names)


def test_a_failed_check_creates_no_file(tmp_path):
    """The writability check leaves nothing behind when the start fails later."""
    pcap = tmp_path / "cap.pcap"
    r = run_stack(*UP, "--pcap", str(pcap), "--host-address", "192.0.2.2/24")
    assert_one_error(r, 2, "--host-address")
    assert not pcap.exists()


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"t": 0.0, "layer": "link", "event": "up"}\n')
    return path


TRACE_CASES = [
    ("missing-file", ["/nonexistent-dir/t.jsonl"], 2, ["/nonexistent-dir/t.jsonl"]),
    ("conn-not-an-address", ["{trace}", "--conn", "foo:80"], 2, ["--conn", "foo"]),
    ("conn-port-word", ["{trace}", "--conn", "192.0.2.1:http"], 2, ["--conn"]),
    ("conn-port-too-big", ["{trace}", "--conn", "70000"], 2, ["--conn"]),
    ("format", ["{trace}", "--format", "pie"], 2, ["--format", "pie"]),
    ("plot-not-writable", ["{trace}", "--plot", "/nonexistent-dir/p.png"], 1,
     ["--plot", "cannot write"]),
    ("no-file", [], 2, ["file"]),
    ("follow-stdin", ["-", "--follow"], 2, ["--follow"]),
    ("from-not-a-number", ["{trace}", "--from", "soon"], 2, ["--from"]),
    ("layer", ["{trace}", "--layer", "tcp"], 2, ["--layer"]),
]


@pytest.mark.parametrize("args,code,names", [c[1:] for c in TRACE_CASES],
                         ids=[c[0] for c in TRACE_CASES])
def test_stack_trace_bad_input_is_one_error_line(trace_file, args, code, names):
    args = [a.format(trace=trace_file) for a in args]
    assert_one_error(run_stack("trace", *args), code, *names)


@pytest.mark.parametrize("args,names", [([], ["COMMAND"]), (["frobnicate"], ["frobnicate"]),
                                        ([*UP, "stray"], ["unrecognized", "stray"])],
                         ids=["no-command", "unknown-command", "stray-argument"])
def test_bad_commands_are_one_error_line(args, names):
    assert_one_error(run_stack(*args), 2, *names)
