"""test_otp_compat: what nodexd's distribution handshake offers holds for OTP 26, 27 and 28 peers.

OTP 26 refuses peers without DFLAG_V4_NC and DFLAG_UNLINK_ID besides OTP 25's mandatory set, whose
presence is summed up by the DFLAG_MANDATORY_25_DIGEST bit (0x4000000 in OTP's dist.hrl; the
erl_dist_protocol text once gave 1 bsl 36). Both directions are read off real handshakes: a peer
connecting to nodexd, and nodexd connecting to a C-node."""

import os
import socket
import struct

import nodex_harness as nx

DFLAG = {
    "EXTENDED_REFERENCES": 0x4, "FUN_TAGS": 0x10, "NEW_FUN_TAGS": 0x80,
    "EXTENDED_PIDS_PORTS": 0x100, "EXPORT_PTR_TAG": 0x200, "BIT_BINARIES": 0x400,
    "NEW_FLOATS": 0x800, "UTF8_ATOMS": 0x10000, "MAP_TAG": 0x20000, "BIG_CREATION": 0x40000,
    "HANDSHAKE_23": 0x1000000, "UNLINK_ID": 0x2000000, "MANDATORY_25_DIGEST": 0x4000000,
    "V4_NC": 1 << 34,
}
MANDATORY_25 = ("EXTENDED_REFERENCES", "FUN_TAGS", "NEW_FUN_TAGS", "EXTENDED_PIDS_PORTS",
                "EXPORT_PTR_TAG", "BIT_BINARIES", "NEW_FLOATS", "UTF8_ATOMS", "MAP_TAG",
                "BIG_CREATION", "HANDSHAKE_23")
MANDATORY_26 = ("V4_NC", "UNLINK_ID")
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "flags_peer.py")


def missing(flags):
    want = MANDATORY_25 + MANDATORY_26 + ("MANDATORY_25_DIGEST",)
    return [n for n in want if not flags & DFLAG[n]]


def recv_msg(sock):
    head = sock.recv(2, socket.MSG_WAITALL)
    assert len(head) == 2, "nodexd closed the handshake"
    return sock.recv(struct.unpack(">H", head)[0], socket.MSG_WAITALL)


def test_nodexd_accepting_offers_every_flag_otp26_requires(session, nodexd):
    d = nodexd([nx.test_cnode_spec("t")])
    d.wait_up("t")
    port = session.epmd_port_of(d.sname)
    everything = (1 << 37) - 1  # an OTP 28 peer offers more than nodexd knows: ignored
    name = b"otp_probe@127.0.0.1"
    send_name = b"N" + struct.pack(">QIH", everything, 7, len(name)) + name
    with socket.create_connection((nx.HOST, port), timeout=10) as s:
        s.sendall(struct.pack(">H", len(send_name)) + send_name)
        assert recv_msg(s)[:1] == b"s"  # status (ok, or nok: either way the challenge follows)
        challenge = recv_msg(s)
    assert challenge[:1] == b"N", challenge  # OTP 23+ challenge: 64-bit flags
    flags = struct.unpack(">Q", challenge[1:9])[0]
    assert not missing(flags), f"nodexd offers {flags:#x}, lacking {missing(flags)}"


def test_nodexd_connecting_offers_every_flag_otp26_requires(nodexd, tmp_path):
    out = tmp_path / "flags"
    d = nodexd([{"name": "peer", "direction": "to", "executable": PEER,
                 "args": ["{sname}", "{hostname}", str(out)],
                 "spawn_inactive_timeout_ms": int(5000 * nx.SLOW), "backoff_initial_ms": 50,
                 "backoff_max_ms": 200}])
    nx.wait_until(out.exists, 20 * nx.SLOW, what="nodexd to connect to the peer")
    tag, flags = out.read_text().split()
    flags = int(flags, 16)
    assert tag == "N", tag
    assert not missing(flags), f"nodexd offers {flags:#x}, lacking {missing(flags)}"
    # beyond ei's set: named monitors, whose MONITOR_P_EXIT OTP sends only to nodes offering it
    assert flags & 0x20, f"nodexd offers {flags:#x} without DFLAG_DIST_MONITOR_NAME"
    assert d.proc.poll() is None
