// terms: JavaScript values <-> Erlang terms (the nodex.v1.Term message as @grpc/proto-loader sees it).

/** An Erlang atom. Use `atom(name)`: atoms are interned, so `atom('ok') === atom('ok')`. */
export class Atom {
  /** @param {string} name */
  constructor(name) {
    if (typeof name !== 'string') throw new TypeError('an atom name is a string');
    /** @readonly */ this.name = name;
    Object.freeze(this);
  }
  toString() {
    return this.name;
  }
  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `atom(${JSON.stringify(this.name)})`;
  }
}

/** @type {Map<string, Atom>} */
const atoms = new Map();

/** The atom `name` (interned). @param {string} name @returns {Atom} */
export function atom(name) {
  let a = atoms.get(name);
  if (!a) {
    a = new Atom(name);
    if (atoms.size < 100000) atoms.set(name, a);
  }
  return a;
}

/** An Erlang tuple: an Array subclass. Build one with `tuple(a, b, ...)`. */
export class Tuple extends Array {
  static get [Symbol.species]() {
    return Array;
  }
}

/** @param {...unknown} items @returns {Tuple} */
export function tuple(...items) {
  const t = new Tuple();
  t.push(...items);
  return t;
}

/** `[E1, ..., En | Tail]`: at least one element, and a tail that is not a list. */
export class ImproperList {
  /** @param {unknown[]} elements @param {unknown} tail */
  constructor(elements, tail) {
    this.elements = [...elements];
    this.tail = tail;
  }
}

/** A float even when its value is whole (`new Float(1)` is `1.0`; the number 1 is the integer 1). */
export class Float {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }
  valueOf() {
    return this.value;
  }
}

/** A bit string that is not a whole number of bytes: `bits` bits in ceil(bits / 8) bytes. */
export class BitString {
  /** @param {Uint8Array} data @param {number} bits */
  constructor(data, bits) {
    if (!Number.isInteger(bits) || bits < 0 || data.length !== Math.ceil(bits / 8)) {
      throw new RangeError(`BitString: ${data.length} bytes cannot hold ${bits} bits`);
    }
    this.data = Buffer.from(data);
    this.bits = bits;
  }
}

/** A string sent as an Erlang string, i.e. a list of code points ("abc" = [97,98,99]). */
export class Charlist {
  /** @param {string} text */
  constructor(text) {
    this.text = text;
  }
}

/** A pid, reference, port or fun: the term's External Term Format bytes (starting with 131). */
export class Opaque {
  /** @param {Uint8Array} etf */
  constructor(etf) {
    this.etf = Buffer.from(etf);
  }
  /** @param {unknown} other */
  equals(other) {
    return other instanceof Opaque && other.constructor === this.constructor &&
      this.etf.equals(other.etf);
  }
  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `${this.constructor.name}(${this.etf.toString('base64')})`;
  }
}
export class Pid extends Opaque {}
export class Ref extends Opaque {}
export class Port extends Opaque {}
export class Fun extends Opaque {}

/** Stands for the calling request's own reply pid (`self()` in Erlang text). */
export const SELF = Object.freeze(new (class SelfPid {})());

/** A payload given (or returned, with asEtf) as raw External Term Format bytes. */
export class Etf {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = Buffer.from(bytes);
  }
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const OPAQUES = /** @type {const} */ ([['pid', Pid], ['ref', Ref], ['port', Port], ['fun', Fun]]);
const MAX_DEPTH = 4096;

/** @param {bigint} n */
function encodeBigInt(n) {
  return n >= INT64_MIN && n <= INT64_MAX ? { int: n.toString() } : { big_int: n.toString() };
}

/**
 * Encodes a JavaScript value as a nodex.v1.Term object (for @grpc/proto-loader).
 * @param {unknown} v
 * @returns {object}
 */
export function toTerm(v, depth = 0) {
  if (depth > MAX_DEPTH) throw new RangeError(`term nested deeper than ${MAX_DEPTH} levels`);
  const d = depth + 1;
  switch (typeof v) {
    case 'boolean':
      return { atom: v ? 'true' : 'false' };
    case 'string':
      return { binary: Buffer.from(v, 'utf8') };
    case 'bigint':
      return encodeBigInt(v);
    case 'number':
      if (!Number.isFinite(v)) throw new RangeError(`Erlang has no float ${v}`);
      if (Number.isSafeInteger(v)) return encodeBigInt(BigInt(v)); // else inexact: a float
      return { float: v };
    case 'undefined':
      throw new TypeError("undefined has no Erlang term: use atom('undefined')");
    case 'symbol':
    case 'function':
      throw new TypeError(`no Erlang term for a ${typeof v}`);
  }
  if (v === null) throw new TypeError("null has no Erlang term: use atom('undefined') or atom('nil')");
  if (v instanceof Atom) return { atom: v.name };
  if (v instanceof Tuple) return { tuple: { elements: v.map((e) => toTerm(e, d)) } };
  if (Array.isArray(v)) return { list: { elements: v.map((e) => toTerm(e, d)) } };
  if (v instanceof Uint8Array) return { binary: Buffer.from(v.buffer, v.byteOffset, v.byteLength) };
  if (v instanceof Float) {
    if (!Number.isFinite(v.value)) throw new RangeError(`Erlang has no float ${v.value}`);
    return { float: v.value };
  }
  if (v instanceof Charlist) {
    return { list: { elements: Array.from(v.text, (ch) => ({ int: String(ch.codePointAt(0)) })) } };
  }
  if (v instanceof ImproperList) {
    if (v.elements.length === 0) throw new RangeError('ImproperList needs at least one element');
    if ((Array.isArray(v.tail) && !(v.tail instanceof Tuple)) || v.tail instanceof ImproperList || v.tail instanceof Charlist) {
      throw new RangeError('ImproperList tail must not be a list');
    }
    return { list: { elements: v.elements.map((e) => toTerm(e, d)), tail: toTerm(v.tail, d) } };
  }
  if (v instanceof BitString) {
    return v.bits % 8 === 0 ? { binary: v.data } : { bits: { data: v.data, bits: v.bits } };
  }
  if (v instanceof Map) {
    return { map: { entries: [...v].map(([k, val]) => ({ key: toTerm(k, d), value: toTerm(val, d) })) } };
  }
  for (const [field, cls] of OPAQUES) {
    if (v instanceof cls) return { [field]: { etf: v.etf } };
  }
  if (v instanceof Opaque) throw new TypeError('use Pid, Ref, Port or Fun, not Opaque');
  if (v === SELF) return { self_pid: {} };
  if (v instanceof Etf) throw new TypeError('Etf is a whole payload, not part of a term');
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) {
    // A plain object: a map with binary (UTF-8 string) keys.
    return {
      map: {
        entries: Object.entries(/** @type {object} */ (v)).map(([k, val]) => ({
          key: { binary: Buffer.from(k, 'utf8') },
          value: toTerm(val, d),
        })),
      },
    };
  }
  throw new TypeError(`no Erlang term for ${proto?.constructor?.name ?? 'this object'}`);
}

/** @param {string} s */
function decodeInt(s) {
  const n = BigInt(s);
  return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
}

/**
 * Decodes a nodex.v1.Term object (as @grpc/proto-loader gives it, with `oneofs: true`).
 * @param {any} t
 * @returns {unknown}
 */
export function fromTerm(t) {
  switch (t?.kind) {
    case 'atom':
      return t.atom === 'true' ? true : t.atom === 'false' ? false : atom(t.atom);
    case 'int':
    case 'big_int':
      return decodeInt(String(t[t.kind]));
    case 'float':
      return t.float;
    case 'binary':
      return Buffer.from(t.binary);
    case 'bits': {
      const bits = Number(t.bits.bits);
      return bits % 8 === 0 ? Buffer.from(t.bits.data) : new BitString(t.bits.data, bits);
    }
    case 'list': {
      const elements = (t.list.elements ?? []).map(fromTerm);
      if (!t.list.tail) return elements;
      const tail = fromTerm(t.list.tail);
      if (tail instanceof Tuple || !Array.isArray(tail)) {
        if (tail instanceof ImproperList) return new ImproperList([...elements, ...tail.elements], tail.tail);
        return elements.length ? new ImproperList(elements, tail) : tail;
      }
      return [...elements, ...tail];
    }
    case 'tuple':
      return tuple(...(t.tuple.elements ?? []).map(fromTerm));
    case 'map':
      return new Map((t.map.entries ?? []).map((e) => [fromTerm(e.key), fromTerm(e.value)]));
    case 'pid':
      return new Pid(t.pid.etf);
    case 'ref':
      return new Ref(t.ref.etf);
    case 'port':
      return new Port(t.port.etf);
    case 'fun':
      return new Fun(t.fun.etf);
    case 'self_pid':
      return SELF;
    default:
      throw new TypeError(`empty or unknown Term (kind ${t?.kind})`);
  }
}

/** A request payload: Etf goes as raw ETF, anything else as a term. @param {unknown} v */
export function toPayload(v) {
  return v instanceof Etf ? { etf: v.bytes } : { term: toTerm(v) };
}

/** A reply payload: the decoded term, or Etf for raw ETF. @param {any} p */
export function fromPayload(p) {
  if (p?.value === 'etf') return new Etf(p.etf);
  if (p?.value === 'term') return fromTerm(p.term);
  throw new TypeError('empty Payload');
}
