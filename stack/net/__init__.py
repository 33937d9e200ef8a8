"""The network layers below the transports: Ethernet/ARP, IPv4, ICMP, and UDP."""
