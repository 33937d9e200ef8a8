"""A path emulator: a relay that impairs both directions between two
interfaces (delay, jitter, loss, reordering, rate limit, queue limit),
seeded. ``core`` is the impairment with no IO, ``relay`` the AF_PACKET loop,
``topo`` the namespaces a run builds around it, ``__main__`` the command line."""

from bench.pathemu.core import Counters, Direction, Profile

__all__ = ["Counters", "Direction", "Profile"]
