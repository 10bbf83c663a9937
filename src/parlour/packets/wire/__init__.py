"""The bytes of one packet: addresses, the Internet checksum, IPv4 and TCP headers, link-layer
types, whole-packet builders and the hex dump. Imports nothing else from the packet lab."""
