"""Wire formats: bytes in, small frozen values out, and back.

Each module parses a header into a frozen, slotted dataclass (a "repr") and
emits it into bytes. Parsing checks integrity (lengths, checksums) before it
reads fields and raises :class:`WireError` naming the bad field; it never logs.
"""


class WireError(ValueError):
    """A header that cannot be parsed. ``field`` names what was wrong."""

    def __init__(self, field: str, detail: str = "") -> None:
        super().__init__(f"{field}: {detail}" if detail else field)
        self.field = field
