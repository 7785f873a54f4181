// Unit tests of the JavaScript <-> nodex.v1.Term mapping, through real protobuf (de)serialization.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  atom, tuple, Tuple, Atom, ImproperList, Float, BitString, Charlist, Pid, Ref, Port, Fun, SELF,
  Etf, toTerm, fromTerm, toPayload, fromPayload,
} from '../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const def = protoLoader.loadSync(path.join(here, '..', '..', '..', 'proto', 'nodex', 'v1', 'nodex.proto'), {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const Call = grpc.loadPackageDefinition(def).nodex.v1.Gateway.service.Call;

/** JS -> Term -> protobuf bytes -> Term -> JS */
function wire(v) {
  const bytes = Call.requestSerialize({ cnode: 'x', request: toPayload(v) });
  return fromPayload(Call.requestDeserialize(bytes).request);
}

const PID = Buffer.from([131, 88, 119, 1, 0x61, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);

const ROUND_TRIPS = [
  atom('ok'), atom(''), atom('hello world'), atom('ünïcode'), true, false,
  0, 1, -1, 255, 256, 2 ** 31, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER,
  2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, -(2n ** 63n) - 1n, 10n ** 40n, -(10n ** 40n), 2n ** 2400n,
  0.5, -1.5e300, 5e-324, 1.7976931348623157e308, 0.1,
  Buffer.alloc(0), Buffer.from('hi'), Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  new BitString(Buffer.from([1, 2, 0x18]), 21), new BitString(Buffer.from([0x80]), 1),
  [], [1, 2, 3], [atom('a'), [Buffer.from('nested'), [[]]]], Array.from({ length: 300 }, (_, i) => i),
  new ImproperList([atom('a')], atom('b')), new ImproperList([1, 2], Buffer.from('tail')),
  new ImproperList([[1]], tuple(1, 2)),
  tuple(), tuple(atom('ping'), Buffer.from('hello')), tuple(tuple(tuple(tuple()))),
  new Map(), new Map([[Buffer.from('k'), 1]]), new Map([[tuple(1, 2), atom('pair')], [[1], atom('list key')]]),
  new Map([[1, atom('int')], [new Float(1), atom('float')], [true, atom('atom')]]),
  new Pid(PID), new Ref(Buffer.from('\x83Zref')), new Port(Buffer.from('\x83Xp')), new Fun(Buffer.from('\x83pf')),
  SELF,
];

// Float(1) comes back as the number 1 (a whole number is an integer in JS), so compare floats by kind.
function normalize(v) {
  if (v instanceof Float) return { float: v.value };
  if (v instanceof Tuple) return { tuple: v.map(normalize) };
  if (Array.isArray(v)) return v.map(normalize);
  if (v instanceof Map) return { map: [...v].map(([k, x]) => [normalize(k), normalize(x)]) };
  if (v instanceof ImproperList) return { improper: v.elements.map(normalize), tail: normalize(v.tail) };
  return v;
}

for (const v of ROUND_TRIPS) {
  test(`round trip ${String(typeof v === 'bigint' ? `${v}n` : v?.constructor?.name ?? v).slice(0, 40)}`, () => {
    const back = wire(v);
    if (v instanceof Map && [...v.keys()].some((k) => k instanceof Float)) {
      // 1 (int) and 1.0 (float) both decode to the number 1: one JS Map key (documented)
      assert.equal(back.size, 2);
      assert.equal(back.get(true), atom('atom'));
      return;
    }
    assert.deepStrictEqual(normalize(back), normalize(v));
  });
}

test('everything nested', () => {
  const all = tuple(...ROUND_TRIPS.filter((v) => !(v instanceof Map)));
  assert.deepStrictEqual(wire([all, new Map([[Buffer.from('all'), all]])]), [all, new Map([[Buffer.from('all'), all]])]);
});

test('integers pick int or big_int, floats stay floats', () => {
  assert.deepEqual(toTerm(2n ** 63n - 1n), { int: '9223372036854775807' });
  assert.deepEqual(toTerm(2n ** 63n), { big_int: '9223372036854775808' });
  assert.deepEqual(toTerm(-(2n ** 63n) - 1n), { big_int: '-9223372036854775809' });
  assert.deepEqual(toTerm(1e20), { float: 1e20 }); // beyond 2^53 a number is inexact: a float
  assert.deepEqual(toTerm(42), { int: '42' });
  assert.deepEqual(toTerm(1.5), { float: 1.5 });
  assert.deepEqual(toTerm(new Float(1)), { float: 1 });
  assert.equal(wire(2n ** 53n), 2n ** 53n);
  assert.equal(wire(2 ** 53 - 1), 2 ** 53 - 1);
  assert.equal(fromTerm({ kind: 'big_int', big_int: '5' }), 5);
  assert.ok(Object.is(wire(new Float(-0)), -0));
});

test('strings go as UTF-8 binaries, atoms are interned', () => {
  assert.deepEqual(wire('héllo'), Buffer.from('héllo'));
  assert.deepEqual(wire(new Uint8Array([1, 2])), Buffer.from([1, 2]));
  assert.equal(wire(atom('pong')), atom('pong'));
  assert.ok(wire(atom('x')) instanceof Atom);
  assert.equal(wire(atom('true')), true);
});

test('charlist and plain objects', () => {
  assert.deepEqual(wire(new Charlist('aé€')), [97, 233, 8364]);
  assert.deepEqual(wire({ k: 1, 'ü': [2] }), new Map([[Buffer.from('k'), 1], [Buffer.from('ü'), [2]]]));
});

test('improper list normalisation and checks', () => {
  const t = { kind: 'list', list: { elements: [{ kind: 'int', int: '1' }], tail: { kind: 'list', list: { elements: [{ kind: 'int', int: '2' }], tail: { kind: 'atom', atom: 'x' } } } } };
  assert.deepEqual(fromTerm(t), new ImproperList([1, 2], atom('x')));
  assert.throws(() => toTerm(new ImproperList([], atom('x'))), RangeError);
  assert.throws(() => toTerm(new ImproperList([1], [2])), RangeError);
});

test('bit strings', () => {
  assert.deepEqual(toTerm(new BitString(Buffer.from('ab'), 16)), { binary: Buffer.from('ab') });
  assert.throws(() => new BitString(Buffer.from([1]), 9), RangeError);
});

test('opaques and SELF', () => {
  for (const [cls, field] of [[Pid, 'pid'], [Ref, 'ref'], [Port, 'port'], [Fun, 'fun']]) {
    const v = new cls(Buffer.from('\x83etf'));
    assert.ok(toTerm(v)[field]);
    const back = wire(v);
    assert.ok(back instanceof cls && back.equals(v));
  }
  assert.ok(!new Pid(Buffer.from('\x83a')).equals(new Ref(Buffer.from('\x83a'))));
  assert.deepEqual(toTerm(SELF), { self_pid: {} });
  assert.equal(wire(SELF), SELF);
});

test('refused values', () => {
  for (const bad of [null, undefined, NaN, Infinity, Symbol('s'), () => 1, new Date(), new Set()]) {
    assert.throws(() => toTerm(bad), TypeError.prototype.isPrototypeOf.bind(TypeError.prototype) && Error);
  }
  let deep = [];
  for (let i = 0; i < 5000; i++) deep = [deep];
  assert.throws(() => toTerm(deep), RangeError);
});

test('payloads', () => {
  assert.deepEqual(toPayload(new Etf(Buffer.from([131, 106]))), { etf: Buffer.from([131, 106]) });
  const back = fromPayload({ value: 'etf', etf: Buffer.from([131, 106]) });
  assert.ok(back instanceof Etf && back.bytes.equals(Buffer.from([131, 106])));
  assert.throws(() => fromPayload({}), TypeError);
});
