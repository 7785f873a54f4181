// nodex-client: promise-based Node.js client of the nodexd gRPC API (nodex.v1.Gateway).

import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import { fromPayload, toPayload, toTerm, Etf } from './terms.js';

export * from './terms.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where nodex.proto is: $NODEX_PROTO, the package's own copy (npm pack), or the repository's. */
function protoFile() {
  const candidates = [
    process.env.NODEX_PROTO,
    path.join(here, '..', 'proto', 'nodex', 'v1', 'nodex.proto'),
    path.join(here, '..', '..', '..', 'proto', 'nodex', 'v1', 'nodex.proto'),
  ];
  const found = candidates.find((p) => p && existsSync(p));
  if (!found) throw new Error('nodex-client: nodex.proto not found (set NODEX_PROTO)');
  return found;
}

let cachedPkg = null;
function loadPackage() {
  if (!cachedPkg) {
    const def = protoLoader.loadSync(protoFile(), {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    cachedPkg = grpc.loadPackageDefinition(def).nodex.v1;
  }
  return cachedPkg;
}

/** A failed gRPC call: `code` is the numeric gRPC status, `codeName` its name, `details` the message. */
export class NodexError extends Error {
  /** @param {number|null} code @param {string} details @param {string} [codeName] */
  constructor(code, details, codeName) {
    const name = codeName ?? (code === null ? 'BADRPC' : (grpc.status[code] ?? `STATUS_${code}`));
    super(`${name}: ${details}`);
    this.name = 'NodexError';
    this.code = code;
    this.codeName = name;
    this.details = details;
  }

  /** @param {any} e */
  static from(e) {
    if (e instanceof NodexError) return e;
    if (e && typeof e.code === 'number') return new NodexError(e.code, e.details ?? e.message ?? '');
    return new NodexError(grpc.status.UNKNOWN, String(e?.message ?? e));
  }
}

/** `rpc` answered `{badrpc, Reason}`: `reason` is the decoded Reason. */
export class BadRpc extends NodexError {
  /** @param {unknown} reason */
  constructor(reason) {
    super(null, 'badrpc', 'BADRPC');
    this.name = 'BadRpc';
    this.reason = reason;
  }
}

/** The status codes, by name (grpc.status). */
export const status = grpc.status;

const lower = (s) => String(s).toLowerCase();
const state = (s) => (s === 'STATE_UNSPECIFIED' ? 'unspecified' : lower(s));
const num = (s) => Number(s);

function cnodeInfo(m) {
  return {
    name: m.name,
    state: state(m.state),
    node: m.node,
    osPid: m.os_pid,
    restarts: m.restarts,
    lastExit: m.last_exit,
    lastError: m.last_error,
    inFlight: num(m.in_flight),
    uptimeMs: num(m.uptime_ms),
    callsTotal: num(m.calls_total),
    droppedMessages: num(m.dropped_messages),
    direction: m.direction,
    protocol: m.protocol,
  };
}

function nodeInfo(m) {
  return {
    node: m.node,
    connected: m.connected,
    child: m.child,
    state: state(m.state),
    osPid: m.os_pid,
    restarts: m.restarts,
  };
}

function event(m) {
  return {
    seq: num(m.seq),
    timeMs: num(m.time_ms),
    kind: lower(m.kind),
    name: m.name,
    node: m.node,
    state: state(m.state),
    reason: m.reason,
    osPid: m.os_pid,
  };
}

/** A server stream: `for await` it; `cancel()` ends it (iteration then just stops). */
export class Stream {
  constructor(call, convert) {
    this._call = call;
    this._convert = convert;
    this._cancelled = false;
  }

  cancel() {
    this._cancelled = true;
    this._call.cancel();
  }

  async *[Symbol.asyncIterator]() {
    let done = false;
    try {
      for await (const m of this._call) yield this._convert(m);
      done = true;
    } catch (e) {
      done = true;
      if (this._cancelled && e?.code === grpc.status.CANCELLED) return;
      throw NodexError.from(e);
    } finally {
      if (!done) this.cancel(); // the consumer stopped early (break / return)
    }
  }
}

function channelCredentials(options) {
  if (options.credentials) return options.credentials;
  const { tls, caFile, certFile, keyFile } = options;
  if (!certFile !== !keyFile) throw new TypeError('certFile and keyFile go together');
  if (!tls && !caFile && !certFile) return grpc.credentials.createInsecure();
  const read = (f) => (f ? readFileSync(f) : null);
  return grpc.credentials.createSsl(read(caFile), read(keyFile), read(certFile));
}

function bearerToken({ token, tokenFile, tokenEnv }) {
  let t = token;
  if (t == null && tokenFile) t = readFileSync(tokenFile, 'utf8').split(/\r?\n/)[0].trim();
  if (t == null && tokenEnv) t = process.env[tokenEnv] || null;
  if (t != null && !/^\S+$/.test(t)) throw new TypeError('a bearer token is one non-empty word');
  return t;
}

function callOptions(opts) {
  const o = {};
  if (opts?.timeout != null) o.deadline = new Date(Date.now() + opts.timeout);
  return o;
}

/** A connection to nodexd's gRPC API. Timeouts are in milliseconds. */
export class Gateway {
  /**
   * TLS when `tls`, `caFile` (PEM CAs for nodexd's certificate; default the system's) or a
   * client certificate (`certFile` + `keyFile`, for mTLS) is given. A bearer token (sent as
   * `authorization: Bearer T` metadata on every call) comes from `token`, the first line of
   * `tokenFile`, or the environment variable named by `tokenEnv`.
   * @param {string} [target] "host:port", default "localhost:50051"
   * @param {{credentials?: grpc.ChannelCredentials, channelOptions?: object, tls?: boolean,
   *   caFile?: string, certFile?: string, keyFile?: string, token?: string,
   *   tokenFile?: string, tokenEnv?: string}} [options]
   */
  constructor(target = 'localhost:50051', options = {}) {
    const Client = loadPackage().Gateway;
    this.target = target;
    this._client = new Client(target, channelCredentials(options), options.channelOptions ?? {});
    const token = bearerToken(options);
    this._metadata = new grpc.Metadata();
    if (token) this._metadata.set('authorization', `Bearer ${token}`);
  }

  close() {
    this._client.close();
  }

  _unary(method, request, opts) {
    return new Promise((resolve, reject) => {
      const signal = opts?.signal;
      const call = this._client[method](request, this._metadata, callOptions(opts), (err, reply) => {
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(NodexError.from(err));
        else resolve(reply);
      });
      function onAbort() {
        call.cancel();
      }
      if (signal) {
        if (signal.aborted) call.cancel();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  /** Sends `request` to the C-node and resolves to its reply. */
  async call(cnode, request, opts = {}) {
    const req = { cnode, request: toPayload(request), reply_as_etf: !!opts.asEtf };
    return fromPayload((await this._unary('Call', req, opts)).reply);
  }

  /** Every message reaching the call's pid, the reply last (`final: true`). */
  callStream(cnode, request, opts = {}) {
    const req = { cnode, request: toPayload(request), reply_as_etf: !!opts.asEtf };
    const call = this._client.CallStream(req, this._metadata, callOptions(opts));
    return new Stream(call, (m) => ({ message: fromPayload(m.message), final: m.final }));
  }

  /** Sends `message` to the C-node; resolves once nodexd has accepted it. */
  async cast(cnode, message, opts = {}) {
    await this._unary('Cast', { cnode, message: toPayload(message) }, opts);
  }

  async listCnodes(opts = {}) {
    return (await this._unary('ListCnodes', {}, opts)).cnodes.map(cnodeInfo);
  }

  async getCnode(name, opts = {}) {
    return cnodeInfo(await this._unary('GetCnode', { name }, opts));
  }

  /** Lifecycle events of C-nodes and Erlang nodes until cancel(). */
  watch(opts = {}) {
    const call = this._client.Watch(
      { include_current: !!opts.includeCurrent },
      this._metadata,
      callOptions(opts),
    );
    return new Stream(call, event);
  }

  /** rpc:call(Node, Module, Function, Args); rejects with BadRpc on {badrpc, Reason}. */
  async rpc(node, module, fn, args = [], opts = {}) {
    const payload = args instanceof Etf ? { etf: args.bytes } : { term: toTerm(args) };
    const req = { node, module, function: fn, args: payload, reply_as_etf: !!opts.asEtf };
    const reply = await this._unary('Rpc', req, opts);
    if (reply.outcome === 'badrpc') throw new BadRpc(fromPayload(reply.badrpc));
    return fromPayload(reply.result);
  }

  async listNodes(opts = {}) {
    return (await this._unary('ListNodes', {}, opts)).nodes.map(nodeInfo);
  }

  /** Starts `count` child Erlang nodes; resolves to their names once up and connected. */
  async spawnNodes(count = 1, opts = {}) {
    return (await this._unary('SpawnNodes', { count }, opts)).nodes;
  }

  async stopNode(node, opts = {}) {
    await this._unary('StopNode', { node }, opts);
  }

  /** Loads a compiled module (the .beam file's bytes) on `node`. */
  async loadModule(node, module, beam, opts = {}) {
    await this._unary('LoadModule', { node, module, beam: Buffer.from(beam) }, opts);
  }
}
