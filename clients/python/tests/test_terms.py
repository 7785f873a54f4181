"""Unit tests of the Python <-> nodex.v1.Term mapping (no server needed)."""

import math

import pytest

from nodex import (SELF, Atom, BitString, Charlist, Etf, Fun, ImproperList, MapPairs, Pid, Port,
                   Ref, from_term, to_term)
from nodex.terms import _strict_eq, from_payload, to_payload
from nodex.v1 import nodex_pb2 as pb

PID_ETF = bytes([131, 88, 119, 10]) + b"nodex@host" + bytes(12)


def wire(value):
    """Python -> Term -> protobuf bytes -> Term -> Python."""
    data = to_term(value).SerializeToString()
    t = pb.Term()
    t.ParseFromString(data)
    return from_term(t)


def assert_same(a, b):
    assert _strict_eq(a, b), f"{a!r:.300} != {b!r:.300}"


ROUND_TRIPS = [
    Atom("ok"), Atom(""), Atom("hello world"), Atom("ünïcode"), True, False,
    0, 1, -1, 255, 256, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63),
    2**63, -(2**63) - 1, 2**64, 10**40, -(10**40), 2**(8 * 300),
    0.0, -0.0, 1.0, 0.1, -1.5e300, 5e-324, 1.7976931348623157e308,
    b"", b"hi", bytes(range(256)), b"\xff" * 10000,
    BitString(b"\x01\x02\x18", 21), BitString(b"\x80", 1),
    [], [1, 2, 3], [Atom("a"), [b"nested", [[]]]], list(range(300)),
    ImproperList([Atom("a")], Atom("b")), ImproperList([1, 2], b"tail"),
    ImproperList([[1]], (1, 2)),
    (), (Atom("ping"), b"hello"), ((((),),),), tuple(range(100)),
    {}, {b"k": 1}, {Atom("k"): [1, 2]}, {(1, 2): Atom("pair"), (Atom("a"), b"b"): {b"x": 1.5}},
    {1: Atom("int"), 2.5: Atom("float")},
    MapPairs([([1, 2], Atom("list key")), ({b"m": 1}, Atom("map key"))]),
    MapPairs([(1, Atom("int")), (1.0, Atom("float")), (True, Atom("atom"))]),
    Pid(PID_ETF), Ref(b"\x83Zref"), Port(b"\x83Xport"), Fun(b"\x83pfun"),
    SELF,
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: repr(v)[:40])
def test_round_trip(value):
    assert_same(wire(value), value)


def test_round_trip_everything_nested():
    big = tuple(ROUND_TRIPS)
    assert_same(wire(big), big)
    assert_same(wire([big, {b"all": list(big)}]), [big, {b"all": list(big)}])


def test_ints_choose_int_or_big_int():
    assert to_term(2**63 - 1).WhichOneof("kind") == "int"
    assert to_term(-(2**63)).WhichOneof("kind") == "int"
    assert to_term(2**63).big_int == "9223372036854775808"
    assert to_term(-(2**63) - 1).big_int == "-9223372036854775809"
    t = pb.Term(big_int="-123456789012345678901234567890")
    assert from_term(t) == -123456789012345678901234567890
    assert from_term(pb.Term(big_int="5")) == 5  # a server may send small ones as big_int too


def test_str_goes_as_utf8_binary_and_comes_back_as_bytes():
    assert to_term("héllo").binary == "héllo".encode()
    assert wire("héllo") == "héllo".encode()
    assert wire(bytearray(b"ab")) == b"ab" and wire(memoryview(b"cd")) == b"cd"


def test_atom_is_a_str_but_encodes_as_atom():
    a = Atom("pong")
    assert a == "pong" and isinstance(a, str) and repr(a) == "Atom('pong')"
    assert to_term(a).atom == "pong" and to_term("pong").binary == b"pong"
    assert isinstance(wire(a), Atom)
    assert wire(True) is True and wire(Atom("true")) is True


def test_charlist_is_a_list_of_code_points():
    t = to_term(Charlist("aé€"))
    assert [e.int for e in t.list.elements] == [97, 233, 8364]
    assert wire(Charlist("")) == []


def test_improper_list_structure_and_normalisation():
    t = to_term(ImproperList([1, 2], Atom("t")))
    assert [e.int for e in t.list.elements] == [1, 2] and t.list.tail.atom == "t"
    assert not to_term([1]).list.HasField("tail")
    # [1 | [2]] and [1 | [2 | x]] as a server might send them
    nested = pb.Term()
    nested.list.elements.add().int = 1
    nested.list.tail.list.elements.add().int = 2
    assert from_term(nested) == [1, 2]
    nested.list.tail.list.tail.atom = "x"
    assert from_term(nested) == ImproperList([1, 2], Atom("x"))
    with pytest.raises(ValueError):
        to_term(ImproperList([], Atom("x")))
    with pytest.raises(ValueError):
        to_term(ImproperList([1], [2]))


def test_map_keeps_order_and_falls_back_to_pairs():
    d = {b"z": 1, b"a": 2, (1, Atom("x")): 3}
    t = to_term(d)
    assert [e.key.WhichOneof("kind") for e in t.map.entries] == ["binary", "binary", "tuple"]
    assert list(wire(d).items()) == list(d.items())
    assert isinstance(wire(MapPairs([([1], 1)])), MapPairs)
    assert isinstance(wire(MapPairs([(1, 1), (1.0, 2)])), MapPairs)
    assert MapPairs([(1, 1), (2, 2)]) == MapPairs([(2, 2), (1, 1)])
    assert MapPairs([(1, 1)]) != MapPairs([(1.0, 1)])


def test_bit_string_whole_bytes_is_a_binary():
    assert to_term(BitString(b"ab", 16)).binary == b"ab"
    assert wire(BitString(b"", 0)) == b""
    t = to_term(BitString(b"\x01\x02\x18", 21))
    assert t.bits.data == b"\x01\x02\x18" and t.bits.bits == 21
    with pytest.raises(ValueError):
        BitString(b"\x01", 9)


def test_opaques_and_self():
    for cls, field in ((Pid, "pid"), (Ref, "ref"), (Port, "port"), (Fun, "fun")):
        t = to_term(cls(b"\x83etf"))
        assert t.WhichOneof("kind") == field and getattr(t, field).etf == b"\x83etf"
        assert type(wire(cls(b"\x83etf"))) is cls
        assert hash(cls(b"\x83a")) == hash(cls(b"\x83a"))
    assert Pid(b"\x83a") != Ref(b"\x83a")
    assert to_term(SELF).WhichOneof("kind") == "self_pid"
    assert wire(SELF) is SELF
    assert repr(Pid(b"\x83")) == "Pid('gw==')"


def test_floats():
    assert to_term(1.0).WhichOneof("kind") == "float"
    assert isinstance(wire(1.0), float)
    assert math.copysign(1, wire(-0.0)) == -1
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError):
            to_term(bad)


def test_unsupported_values():
    for bad in (None, object(), {1, 2}, 1j):
        with pytest.raises(TypeError):
            to_term(bad)
    with pytest.raises(TypeError):
        to_term([1, (2, None)])


def test_depth_limit():
    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises((ValueError, RecursionError)):
        to_term(deep)


def test_payloads():
    assert to_payload(Etf(b"\x83d\x00\x02ok")).etf == b"\x83d\x00\x02ok"
    assert to_payload((1,)).term.tuple.elements[0].int == 1
    assert from_payload(pb.Payload(etf=b"\x83j")) == Etf(b"\x83j")
    assert isinstance(from_payload(pb.Payload(etf=b"\x83j")), Etf)
    with pytest.raises(ValueError):
        from_payload(pb.Payload())
    with pytest.raises(ValueError):
        from_term(pb.Term())
