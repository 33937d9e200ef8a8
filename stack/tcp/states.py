"""The eleven RFC 9293 connection states, named as the trace writes them."""

CLOSED = "CLOSED"
LISTEN = "LISTEN"
SYN_SENT = "SYN_SENT"
SYN_RECEIVED = "SYN_RECEIVED"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT_1 = "FIN_WAIT_1"
FIN_WAIT_2 = "FIN_WAIT_2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"

ALL = (CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2,
       CLOSE_WAIT, CLOSING, LAST_ACK, TIME_WAIT)

# States after the handshake in which the peer's sequence numbers are known.
SYNCHRONIZED = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING,
                          LAST_ACK, TIME_WAIT})
# States in which the peer may still send us data.
RECEIVING = frozenset({ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2})
# States in which we may still send data or a FIN (once the handshake is done).
SENDING = frozenset({ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK})
