"""Python values <-> Erlang terms (the nodex.v1.Term protobuf message), lossless both ways.

Mapping (encode: Python -> term; decode: term -> Python):

====================  =======================  ==================================
Python                term                     decodes back as
====================  =======================  ==================================
``Atom("ok")``        atom ``ok``              ``Atom("ok")``
``True``/``False``    atoms ``true``/``false`` ``True``/``False``
``int``               integer (any size)       ``int``
``float``             float                    ``float``
``bytes``             binary                   ``bytes``
``bytearray``,        binary                   ``bytes``
``memoryview``
``str``               binary (UTF-8)           ``bytes`` (encode only)
``BitString``         bit string               ``BitString``
``list``              proper list              ``list``
``Charlist("abc")``   list of code points      ``list`` of ints (encode only)
``ImproperList``      improper list            ``ImproperList``
``tuple``             tuple                    ``tuple``
``dict``              map (order kept)         ``dict``, or ``MapPairs`` when keys
                                               are unhashable or collide in Python
``MapPairs``          map                      (see above)
``Pid/Ref/Port/Fun``  the term (ETF bytes)     ``Pid/Ref/Port/Fun``
``SELF``              the call's own pid       (encode only)
====================  =======================  ==================================

``None`` is refused (Erlang has no null: write ``Atom("undefined")`` or ``Atom("nil")``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, Iterable, List, Tuple, Union

from .v1 import nodex_pb2 as pb

__all__ = [
    "Atom", "BitString", "ImproperList", "MapPairs", "Charlist", "Opaque", "Pid", "Ref", "Port",
    "Fun", "SelfPid", "SELF", "Etf", "Term", "to_term", "from_term", "to_payload", "from_payload",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class Atom(str):
    """An Erlang atom: a str subclass, so ``Atom("ok") == "ok"``; ``repr`` shows it is an atom."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


class Charlist(str):
    """A str sent as an Erlang string (a list of code points), e.g. for ``file:read_file("/x")``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Charlist({str.__repr__(self)})"


@dataclass(frozen=True)
class BitString:
    """A bit string whose length is not a whole number of bytes: ``bits`` bits, stored in
    ``ceil(bits / 8)`` bytes, the last byte's bits in its high end (as in ETF)."""

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if self.bits < 0 or len(self.data) != (self.bits + 7) // 8:
            raise ValueError(f"BitString: {len(self.data)} bytes cannot hold {self.bits} bits")


@dataclass(frozen=True)
class ImproperList:
    """``[E1, ..., En | Tail]``: ``elements`` is never empty and ``tail`` is not a list."""

    elements: Tuple[Any, ...]
    tail: Any

    def __init__(self, elements: Iterable[Any], tail: Any) -> None:
        object.__setattr__(self, "elements", tuple(elements))
        object.__setattr__(self, "tail", tail)


class MapPairs:
    """A map as an ordered list of (key, value) pairs: for maps a dict cannot hold (list or dict
    keys, or keys equal in Python but not in Erlang such as ``1``, ``1.0`` and ``True``)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[Tuple[Any, Any]]) -> None:
        self.pairs: List[Tuple[Any, Any]] = [(k, v) for k, v in pairs]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MapPairs):
            return _pairs_eq(self.pairs, other.pairs)
        return NotImplemented

    def __repr__(self) -> str:
        return f"MapPairs({self.pairs!r})"


def _pairs_eq(a: List[Tuple[Any, Any]], b: List[Tuple[Any, Any]]) -> bool:
    # Erlang maps are unordered: equal when every pair of one is in the other (strict typing).
    if len(a) != len(b):
        return False
    rest = list(b)
    for pair in a:
        for i, other in enumerate(rest):
            if _strict_eq(pair, other):
                del rest[i]
                break
        else:
            return False
    return True


def _strict_eq(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart (as Erlang's =:= does)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_strict_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return _pairs_eq(list(a.items()), list(b.items()))
    if isinstance(a, MapPairs):
        return _pairs_eq(a.pairs, b.pairs)
    if isinstance(a, ImproperList):
        return _strict_eq(a.elements, b.elements) and _strict_eq(a.tail, b.tail)
    return a == b


@dataclass(frozen=True)
class Opaque:
    """A pid, reference, port or fun: its External Term Format bytes (starting with 131), sent
    back byte-exact. Received in replies; there is no way to build one by hand."""

    etf: bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({base64.b64encode(self.etf).decode()!r})"


class Pid(Opaque):
    """An Erlang pid."""


class Ref(Opaque):
    """An Erlang reference."""


class Port(Opaque):
    """An Erlang port."""


class Fun(Opaque):
    """An Erlang fun."""


class SelfPid:
    """Stands for the calling request's own reply pid (``self()`` in Erlang text); use ``SELF``."""

    _instance = None

    def __new__(cls) -> "SelfPid":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SELF"


SELF = SelfPid()


class Etf(bytes):
    """A request given as raw External Term Format (``term_to_binary`` output, version byte 131):
    sent as ``Payload.etf`` untouched."""

    __slots__ = ()


Term = Any  # any value this module maps; Python's type system cannot say more

_OPAQUE = (("pid", Pid), ("ref", Ref), ("port", Port), ("fun", Fun))


def to_term(value: Term, _depth: int = 0) -> pb.Term:
    """Encodes a Python value as a ``nodex.v1.Term``; raises TypeError/ValueError if it has none."""
    t = pb.Term()
    _encode(value, t, _depth)
    return t


def _encode(v: Any, t: pb.Term, depth: int) -> None:
    if depth > 4096:
        raise ValueError("term nested deeper than 4096 levels")
    d = depth + 1
    if isinstance(v, bool):  # before int: bool is an int subclass
        t.atom = "true" if v else "false"
    elif isinstance(v, Atom):
        t.atom = str(v)
    elif isinstance(v, Charlist):
        t.list.SetInParent()
        for ch in v:
            t.list.elements.add().int = ord(ch)
    elif isinstance(v, str):
        t.binary = v.encode("utf-8")
    elif isinstance(v, int):
        if INT64_MIN <= v <= INT64_MAX:
            t.int = v
        else:
            t.big_int = str(v)
    elif isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"Erlang has no float {v!r}")
        t.float = v
    elif isinstance(v, (bytes, bytearray, memoryview)):
        t.binary = bytes(v)
    elif isinstance(v, tuple):
        t.tuple.SetInParent()
        for e in v:
            _encode(e, t.tuple.elements.add(), d)
    elif isinstance(v, list):
        t.list.SetInParent()
        for e in v:
            _encode(e, t.list.elements.add(), d)
    elif isinstance(v, ImproperList):
        if not v.elements:
            raise ValueError("ImproperList needs at least one element")
        if isinstance(v.tail, (list, ImproperList, Charlist)):
            raise ValueError("ImproperList tail must not be a list")
        t.list.SetInParent()
        for e in v.elements:
            _encode(e, t.list.elements.add(), d)
        _encode(v.tail, t.list.tail, d)
    elif isinstance(v, (dict, MapPairs)):
        t.map.SetInParent()
        for k, val in v.items() if isinstance(v, dict) else v.pairs:
            entry = t.map.entries.add()
            _encode(k, entry.key, d)
            _encode(val, entry.value, d)
    elif isinstance(v, BitString):
        if v.bits % 8 == 0:
            t.binary = v.data
        else:
            t.bits.data = v.data
            t.bits.bits = v.bits
    elif isinstance(v, Opaque):
        for field, cls in _OPAQUE:
            if isinstance(v, cls):
                getattr(t, field).etf = v.etf
                break
        else:
            raise TypeError("use Pid, Ref, Port or Fun, not Opaque")
    elif isinstance(v, SelfPid):
        t.self_pid.SetInParent()
    elif v is None:
        raise TypeError("None has no Erlang term: use Atom('undefined') or Atom('nil')")
    else:
        raise TypeError(f"no Erlang term for {type(v).__name__}: {v!r}")


def from_term(t: pb.Term) -> Term:
    """Decodes a ``nodex.v1.Term`` into Python values (see the module's table)."""
    kind = t.WhichOneof("kind")
    if kind == "atom":
        if t.atom == "true":
            return True
        if t.atom == "false":
            return False
        return Atom(t.atom)
    if kind == "int":
        return t.int
    if kind == "big_int":
        return int(t.big_int)
    if kind == "float":
        return t.float
    if kind == "binary":
        return bytes(t.binary)
    if kind == "bits":
        if t.bits.bits % 8 == 0:
            return bytes(t.bits.data)
        return BitString(bytes(t.bits.data), t.bits.bits)
    if kind == "list":
        elements = [from_term(e) for e in t.list.elements]
        if t.list.HasField("tail"):
            tail = from_term(t.list.tail)
            if isinstance(tail, list):  # [a | [b]] is the proper list [a, b]
                return elements + tail
            if isinstance(tail, ImproperList):
                return ImproperList(elements + list(tail.elements), tail.tail)
            if elements:
                return ImproperList(elements, tail)
            return tail
        return elements
    if kind == "tuple":
        return tuple(from_term(e) for e in t.tuple.elements)
    if kind == "map":
        pairs = [(from_term(e.key), from_term(e.value)) for e in t.map.entries]
        try:
            d = dict(pairs)
        except TypeError:  # an unhashable key (list, dict, ...)
            return MapPairs(pairs)
        if len(d) != len(pairs):
            return MapPairs(pairs)  # keys equal in Python but distinct in Erlang (1, 1.0, true)
        return d
    for field, cls in _OPAQUE:
        if kind == field:
            return cls(bytes(getattr(t, field).etf))
    if kind == "self_pid":
        return SELF
    raise ValueError(f"empty or unknown Term (kind {kind!r})")


def to_payload(value: Term) -> pb.Payload:
    """A request payload: ``Etf`` bytes go as raw ETF, everything else as a structured term."""
    if isinstance(value, Etf):
        return pb.Payload(etf=bytes(value))
    return pb.Payload(term=to_term(value))


def from_payload(p: pb.Payload) -> Union[Term, Etf]:
    """A reply payload: a term decoded to Python, or raw ETF as ``Etf`` bytes."""
    which = p.WhichOneof("value")
    if which == "etf":
        return Etf(p.etf)
    if which == "term":
        return from_term(p.term)
    raise ValueError("empty Payload")
