"""Messages to packets: the message CSV, the conversation builder (handshake, data, ACKs,
teardown, chosen anomalies) and the capture writers for built packets."""
