"""BBR in ``stack trace``: the model series and phases in the plot's data,
the third panel of the PNG, and the timeline's summary of the modes, on a
hand-built trace of a BBR connection (and a CUBIC one, which must not change)."""

from __future__ import annotations

import io
import struct

import pytest

from stack import tracetool
from tests.trace.test_tracetool import ACTIVE, C1, ev, seg, st, write_jsonl


def model(t, mode, gain, bw, mrtt, pacing, rate=None, cwnd=20000):
    return ev(t, "tcp", "bbr", conn=C1, cwnd=cwnd, pacing_rate=pacing, bbr_mode=mode,
              bbr_bw=bw, bbr_min_rtt=mrtt, bbr_pacing_gain=gain, bbr_cwnd_gain=2.0,
              delivery_rate=bw if rate is None else rate, app_limited=False, inflight=10000,
              delivered=5000)


G = 2.885
BBR = [
    st(1.0, "CLOSED", "SYN_SENT", "user connect"),
    seg(1.0, "out", "S", 100, opts=["mss 1000"]),
    seg(1.02, "in", "S.", 300, 101, opts=["mss 1000"]),
    st(1.02, "SYN_SENT", "ESTABLISHED", "rcv SYN,ACK seq=300 ack=101"),
    seg(1.03, "out", ".", 101, 301, n=1000),
    model(1.05, "STARTUP", G, 50_000, None, 144_250),
    seg(1.05, "in", ".", 301, 1101),
    model(1.10, "STARTUP", G, 400_000, 0.020, 1_154_000),
    model(1.40, "DRAIN", 0.35, 1_250_000, 0.020, 437_500),
    model(1.45, "PROBE_BW", 1.25, 1_250_000, 0.020, 1_562_500),
    model(1.47, "PROBE_BW", 0.75, 1_300_000, 0.020, 975_000, rate=1_200_000),
    model(1.49, "PROBE_BW", 1.0, 1_300_000, 0.020, 1_300_000),
    model(1.65, "PROBE_BW", 1.25, 1_300_000, 0.019, 1_625_000),
    model(1.67, "PROBE_BW", 1.0, 1_300_000, 0.019, 1_300_000),
    model(11.1, "PROBE_RTT", 1.0, 1_300_000, 0.019, 1_300_000, cwnd=4000),
    model(11.3, "PROBE_BW", 1.0, 1_250_000, 0.021, 1_250_000),
    st(12.0, "ESTABLISHED", "FIN_WAIT_1", "user close"),
    seg(12.0, "out", "F.", 1101, 301),
]


def test_plot_data_has_bbrs_model_and_its_phases():
    d = tracetool.plot_data(BBR, C1, direction="out")
    models = [e for e in BBR if e["event"] == "bbr"]
    times = [pytest.approx(e["t"] - 1.0) for e in models]
    assert d["bbr_bw"] == list(zip(times, [e["bbr_bw"] for e in models]))
    assert d["pacing_rate"] == list(zip(times, [e["pacing_rate"] for e in models]))
    assert [r for _, r in d["delivery_rate"]][4] == 1_200_000
    # The first model had no min-RTT yet: it is left out, not drawn at 0.
    assert d["bbr_min_rtt"] == list(zip(times[1:], [e["bbr_min_rtt"] for e in models[1:]]))
    assert [(pytest.approx(a), pytest.approx(b), p) for a, b, p in d["bbr_phases"]] == [
        (0.05, 0.40, "STARTUP"), (0.40, 0.45, "DRAIN"), (0.45, 0.47, "PROBE_BW up"),
        (0.47, 0.49, "PROBE_BW down"), (0.49, 0.65, "PROBE_BW cruise"),
        (0.65, 0.67, "PROBE_BW up"), (0.67, 10.1, "PROBE_BW cruise"),
        (10.1, 10.3, "PROBE_RTT"), (10.3, 11.0, "PROBE_BW cruise")]
    # The older series are still there, as before.
    assert d["segments"] == [(pytest.approx(0.03), 1, 1000)]
    assert d["cwnd"] == [] and [a for _, a in d["acks"]] == [1, 1001]


def test_a_window_clips_the_phases_and_keeps_the_model_inside_it():
    d = tracetool.plot_data(BBR, C1, direction="out", t_from=1.42, t_to=1.5)
    assert [t for t, _ in d["bbr_bw"]] == [pytest.approx(0.45), pytest.approx(0.47),
                                           pytest.approx(0.49)]
    assert [(pytest.approx(a), pytest.approx(b), p) for a, b, p in d["bbr_phases"]] == [
        (0.42, 0.45, "DRAIN"), (0.45, 0.47, "PROBE_BW up"), (0.47, 0.49, "PROBE_BW down"),
        (0.49, 0.50, "PROBE_BW cruise")]


def test_a_connection_without_bbr_events_has_empty_model_series():
    d = tracetool.plot_data(ACTIVE, C1)
    for key in ("bbr_bw", "pacing_rate", "delivery_rate", "bbr_min_rtt", "bbr_phases"):
        assert d[key] == []


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_the_plot_gains_a_bbr_panel_only_for_a_bbr_connection(tmp_path):
    for name, events in (("bbr", BBR), ("cubic", ACTIVE)):
        out = io.StringIO()
        assert tracetool.run(write_jsonl(tmp_path / f"{name}.jsonl", events),
                             plot_out=str(tmp_path / f"{name}.png"), out=out,
                             err=io.StringIO()) == 0, out.getvalue()
    assert _png_size(tmp_path / "bbr.png") == (1100, 1000)      # three panels
    assert _png_size(tmp_path / "cubic.png") == (1100, 800)     # as before: two


def test_the_summary_names_the_modes_and_the_last_model():
    (c,) = tracetool.connections(BBR)
    lines = tracetool.timeline(c).splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("    bbr "))
    assert lines[i:] == [
        "    bbr       STARTUP 0.050 s → DRAIN 0.400 s → PROBE_BW 0.450 s; "
        "PROBE_RTT ×1 (first 10.100 s); 2 bandwidth probes in PROBE_BW",
        "              final bw 10.0 Mbit/s, min-RTT 21.000 ms, pacing rate 10.0 Mbit/s, "
        "cwnd 20000 bytes"]


def test_the_summary_of_a_window_counts_only_what_is_inside_it():
    (c,) = tracetool.windowed(tracetool.connections(BBR), 1.3, 2.0)
    text = tracetool.timeline(c)
    assert ("    bbr       DRAIN 0.400 s → PROBE_BW 0.450 s; 2 bandwidth probes in PROBE_BW"
            in text)
    assert "min-RTT 19.000 ms" in text and "PROBE_RTT" not in text


def test_a_connection_without_bbr_events_has_no_bbr_lines():
    (c,) = tracetool.connections(ACTIVE)
    assert "bbr" not in tracetool.timeline(c)


def test_long_runs_of_modes_are_cut_short():
    events = [model(float(i), "STARTUP" if i % 2 == 0 else "DRAIN", 1.0, 1000, 0.01, 1000)
              for i in range(10)]
    (c,) = tracetool.connections(events)
    (line,) = [x for x in tracetool.timeline(c).splitlines() if x.startswith("    bbr ")]
    assert line == ("    bbr       STARTUP 0.000 s → DRAIN 1.000 s → STARTUP 2.000 s → "
                    "DRAIN 3.000 s → STARTUP 4.000 s → DRAIN 5.000 s → … (4 more)")
