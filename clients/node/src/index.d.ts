// Types of nodex-client: the nodexd gRPC API client (hand-written; the code is plain ESM).
import type { ChannelCredentials, ChannelOptions } from '@grpc/grpc-js';

export class Atom {
  readonly name: string;
  constructor(name: string);
  toString(): string;
}
/** The atom `name`, interned: `atom('ok') === atom('ok')`. */
export function atom(name: string): Atom;

export class Tuple extends Array<Term> {}
export function tuple(...items: Term[]): Tuple;

export class ImproperList {
  elements: Term[];
  tail: Term;
  constructor(elements: Term[], tail: Term);
}
/** A float even when whole: `new Float(1)` is 1.0 (a whole `number` is an integer). */
export class Float {
  value: number;
  constructor(value: number);
  valueOf(): number;
}
export class BitString {
  data: Buffer;
  bits: number;
  constructor(data: Uint8Array, bits: number);
}
/** A string sent as a list of code points. */
export class Charlist {
  text: string;
  constructor(text: string);
}
export class Opaque {
  etf: Buffer;
  constructor(etf: Uint8Array);
  equals(other: unknown): boolean;
}
export class Pid extends Opaque {}
export class Ref extends Opaque {}
export class Port extends Opaque {}
export class Fun extends Opaque {}
/** The calling request's own reply pid (`self()` in Erlang text): use SELF. */
export interface SelfPid {
  readonly __nodexSelfPid?: never;
}
export const SELF: SelfPid;
/** A payload as raw External Term Format (version byte 131). */
export class Etf {
  bytes: Buffer;
  constructor(bytes: Uint8Array);
}

/**
 * A term. In: boolean, number (safe integer = integer, else float), bigint, string (UTF-8 binary),
 * Uint8Array/Buffer, Atom, Tuple, Array, ImproperList, Map, plain object (map with binary keys),
 * Float, BitString, Charlist, Pid/Ref/Port/Fun, SELF. Out: boolean, Atom, number (safe integers
 * and floats), bigint (other integers), Buffer, BitString, Array, Tuple, ImproperList, Map,
 * Pid/Ref/Port/Fun.
 */
export type Term =
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Atom
  | Tuple
  | Term[]
  | ImproperList
  | Map<Term, Term>
  | { [key: string]: Term }
  | Float
  | BitString
  | Charlist
  | Opaque
  | SelfPid;

export function toTerm(value: Term): object;
export function fromTerm(term: object): Term;
export function toPayload(value: Term | Etf): object;
export function fromPayload(payload: object): Term | Etf;

export const status: Record<string, number | string>;

export class NodexError extends Error {
  /** The gRPC status code (grpc.status), null for BadRpc. */
  code: number | null;
  /** "NOT_FOUND", "DEADLINE_EXCEEDED", ..., "BADRPC". */
  codeName: string;
  details: string;
  constructor(code: number | null, details: string, codeName?: string);
  static from(e: unknown): NodexError;
}
export class BadRpc extends NodexError {
  reason: Term;
  constructor(reason: Term);
}

export type State =
  | 'unspecified' | 'starting' | 'up' | 'down' | 'restarting' | 'failed' | 'stopped';

export interface CnodeInfo {
  name: string;
  state: State;
  node: string;
  osPid: number;
  restarts: number;
  lastExit: string;
  lastError: string;
  inFlight: number;
  uptimeMs: number;
  callsTotal: number;
  droppedMessages: number;
  direction: string;
  protocol: string;
}
export interface NodeInfo {
  node: string;
  connected: boolean;
  child: boolean;
  state: State;
  osPid: number;
  restarts: number;
}
export interface Event {
  seq: number;
  timeMs: number;
  kind: 'cnode' | 'erlang_node';
  name: string;
  node: string;
  state: State;
  reason: string;
  osPid: number;
}
export interface StreamMessage {
  message: Term | Etf;
  final: boolean;
}

export class Stream<T> implements AsyncIterable<T> {
  cancel(): void;
  [Symbol.asyncIterator](): AsyncIterator<T>;
}

export interface CallOptions {
  /** Milliseconds; a gRPC deadline. For calls, absent: the C-node's call_timeout_ms. */
  timeout?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}
export interface TermCallOptions extends CallOptions {
  /** Resolve to Etf (raw External Term Format) instead of a decoded term. */
  asEtf?: boolean;
}

export class Gateway {
  readonly target: string;
  constructor(
    target?: string,
    options?: {
      credentials?: ChannelCredentials;
      channelOptions?: ChannelOptions;
      /** TLS (also implied by caFile or certFile) */
      tls?: boolean;
      /** PEM CAs that signed nodexd's certificate (default: the system's) */
      caFile?: string;
      /** client certificate and its key (mTLS) */
      certFile?: string;
      keyFile?: string;
      /** bearer token: given, first line of a file, or an environment variable */
      token?: string;
      tokenFile?: string;
      tokenEnv?: string;
    },
  );
  close(): void;
  call(cnode: string, request: Term | Etf, opts?: TermCallOptions): Promise<Term | Etf>;
  callStream(cnode: string, request: Term | Etf, opts?: TermCallOptions): Stream<StreamMessage>;
  cast(cnode: string, message: Term | Etf, opts?: CallOptions): Promise<void>;
  listCnodes(opts?: CallOptions): Promise<CnodeInfo[]>;
  getCnode(name: string, opts?: CallOptions): Promise<CnodeInfo>;
  watch(opts?: { includeCurrent?: boolean; timeout?: number }): Stream<Event>;
  rpc(node: string, module: string, fn: string, args?: Term[] | Etf,
      opts?: TermCallOptions): Promise<Term | Etf>;
  listNodes(opts?: CallOptions): Promise<NodeInfo[]>;
  spawnNodes(count?: number, opts?: CallOptions): Promise<string[]>;
  stopNode(node: string, opts?: CallOptions): Promise<void>;
  loadModule(node: string, module: string, beam: Uint8Array, opts?: CallOptions): Promise<void>;
}
