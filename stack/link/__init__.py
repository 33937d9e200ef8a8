"""Link layer: the Link interface, devices and the wrappers around them.

``TapLink`` (a Linux TAP through python-pytun), ``MemoryLink.pair()`` (two
stacks on an in-memory cable), ``CaptureLink`` (unit tests of one stack),
``PcapLink`` (capture to a pcap file) and ``ImpairLink`` (fault injection).
"""

from stack.link.base import Link, LinkWrapper
from stack.link.impair import ImpairLink, ImpairSpec, parse_impair
from stack.link.memory import CaptureLink, MemoryLink
from stack.link.pcap import PcapLink
from stack.link.tap import TapLink

__all__ = [
    "CaptureLink",
    "ImpairLink",
    "ImpairSpec",
    "Link",
    "LinkWrapper",
    "MemoryLink",
    "PcapLink",
    "TapLink",
    "parse_impair",
]
