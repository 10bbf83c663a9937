"""Everything that touches a socket: live AF_PACKET capture (with its BPF filter), sending
hand-built datagrams on a raw socket, replaying messages over real TCP connections."""
