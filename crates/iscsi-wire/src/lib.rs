//! iSCSI (RFC 7143) wire format: PDU headers, login/text key=value parsing and
//! negotiation rules, CRC32C digests. Sans-I/O: nothing here touches a socket.
