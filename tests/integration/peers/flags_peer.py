#!/usr/bin/python3
"""flags_peer: a C-node stand-in that records the distribution flags nodexd sends when it connects.

argv: SNAME HOSTNAME OUT_FILE. Registers SNAME in epmd ($ERL_EPMD_PORT), prints the ready line,
accepts nodexd's connection, writes the flags of its send_name to OUT_FILE and exits (nodexd then
restarts it; the test reads the file)."""

import os
import socket
import struct
import sys

sname, host, out = sys.argv[1:4]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]
epmd = socket.create_connection(("127.0.0.1", int(os.environ.get("ERL_EPMD_PORT", "4369"))))
name = sname.encode()
# ALIVE2_REQ: port, node type 72 (hidden), protocol 0, versions 6..5, name, no extra
req = struct.pack(">BHBBHHH", 120, port, 72, 0, 6, 5, len(name)) + name + struct.pack(">H", 0)
epmd.sendall(struct.pack(">H", len(req)) + req)
resp = epmd.recv(16)
if not resp or resp[1] != 0:
    sys.exit(f"epmd refused {sname}: {resp!r}")
print(f"{sname}@{host} ready", flush=True)
conn, _ = listener.accept()
head = conn.recv(2, socket.MSG_WAITALL)
body = conn.recv(struct.unpack(">H", head)[0], socket.MSG_WAITALL)
if body[:1] == b"N":  # OTP 23+: flags (8), creation (4), name
    flags = struct.unpack(">Q", body[1:9])[0]
else:  # "n": version (2), flags (4), name
    flags = struct.unpack(">I", body[3:7])[0]
tmp = out + ".tmp"
with open(tmp, "w") as f:
    f.write(f"{body[:1].decode()} {flags:#x}\n")
os.replace(tmp, out)
