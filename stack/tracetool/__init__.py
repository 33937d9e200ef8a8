"""``stack trace FILE``: read a ``jsonl`` trace and explain its TCP connections.

Reading (:func:`load`) turns the file into a list of event dicts;
:func:`connections` groups the TCP events by connection (the ``conn`` field
``LADDR:LPORT-RADDR:RPORT``; a listener is ``LADDR:LPORT-0.0.0.0:0``) and
splits a 4-tuple that is used again into one :class:`Connection` per
incarnation. Then, per connection:

* :func:`timeline` (``timeline.py``) — the state transitions with their causes,
  and a summary (duration, bytes and segments each way, retransmissions, RTT,
  final state);
* :func:`ladder` (``ladder.py``) — the two-column message-sequence chart of
  the handshake and teardown, data in between summarized;
* :func:`plot_data` / :func:`plot` (``plot.py``) — the time-sequence graph
  with ACKs, window and retransmissions, and cwnd, ssthresh and smoothed RTT
  beneath; for a BBR connection, a third panel with its model (``bbr.py``):
  the phases shaded, the bandwidth estimate and the pacing rate.

Below TCP, :func:`layer_view` (``layers.py``) shows the ip, arp, icmp,
udp and dhcp layers; :func:`follow` (``follow.py``) shows a trace as it is written.

The functions return text or data; only :func:`main` (``command.py``) writes
to the terminal.
"""

from stack.tracetool.command import main, run
from stack.tracetool.ladder import ladder
from stack.tracetool.plot import plot, plot_data
from stack.tracetool.follow import Follower, follow
from stack.tracetool.layers import layer_view
from stack.tracetool.read import (Connection, Summary, TraceError, Transition, busiest,
                                  connections, duration, load, matches, overview, parse_endpoint,
                                  parse_lines, select, summarize, time_in_states, windowed)
from stack.tracetool.timeline import timeline

__all__ = ["Connection", "Follower", "Summary", "TraceError", "Transition", "busiest",
           "connections", "duration", "follow", "ladder", "layer_view", "load", "main", "matches",
           "overview", "parse_endpoint", "parse_lines", "plot", "plot_data", "run", "select",
           "summarize", "time_in_states", "timeline", "windowed"]
