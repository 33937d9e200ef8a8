"""Helpers shared by the tests; nothing here is collected as a test.

- ``checksum``: an independent Internet checksum (the reference the stack is judged by).
- ``frames``: TEST-NET addresses and hand-built Ethernet/ARP/IPv4/ICMP/UDP/TCP frames.
- ``hosts``: a stack on a capture link with a manual clock, and a fixture factory for it.
- ``tcp``: ``Conversation`` (one TcpLayer, a manual clock, state builders) and ``LossyNet``.
- ``tap``: running commands in the test namespace and waiting for a condition.
- ``target``: the stack on a TAP as seen by a scapy attacker (needs scapy and root).

Test modules import from here (``from tests.helpers.frames import eth``), never
from each other.
"""
