// harness: starts a private epmd and a nodexd (HTTP and gRPC on ephemeral ports) for the tests.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, mkdirSync, openSync, closeSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_DIR = path.resolve(here, '..', '..', '..');
export const BUILD_DIR = path.resolve(process.env.NODEX_BUILD_DIR || path.join(REPO_DIR, 'build'));
const SANITIZE = ['ON', '1', 'TRUE', 'YES'].includes((process.env.NODEX_SANITIZE || 'OFF').toUpperCase());
export const SLOW = SANITIZE ? 3 : 1;
const HOST = '127.0.0.1';
const READY_RE = /^nodexd ready http=([^\s:]+):(\d+) node=(\S+)(?: grpc=([^\s:]+):(\d+))?\s*$/;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, HOST);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

const yamlStr = (s) => JSON.stringify(String(s));

function testCnode(name, extra = {}) {
  return {
    name,
    executable: path.join(BUILD_DIR, 'tests', 'test_cnode'),
    args: ['{sname}', '{hostname}', '{cookie}', '{gateway_sname}', 'serve'],
    spawn_inactive_timeout_ms: 3000 * SLOW,
    call_timeout_ms: 5000,
    backoff_initial_ms: 50,
    backoff_max_ms: 200,
    shutdown_timeout_ms: 1000,
    ...extra,
  };
}

/** YAML for the config (block style, strings quoted). */
function cnodeYaml(c) {
  let out = '';
  for (const [k, v] of Object.entries(c)) {
    const key = out ? '    ' : '  - ';
    if (Array.isArray(v)) out += `${key}${k}: [${v.map(yamlStr).join(', ')}]\n`;
    else if (typeof v === 'object') out += `${key}${k}: {${Object.entries(v).map(([a, b]) => `${a}: ${yamlStr(b)}`).join(', ')}}\n`;
    else out += `${key}${k}: ${typeof v === 'number' ? v : yamlStr(v)}\n`;
  }
  return out;
}

/**
 * A private epmd + nodexd with the C-nodes "example", "test", "tagged" (reply filter {tag: reply})
 * and "victim". `grpcTarget` is "127.0.0.1:PORT". Call stop() at the end: it ends every process
 * it started, by pid.
 */
export class Nodexd {
  async start() {
    for (const f of [path.join(BUILD_DIR, 'nodexd'), path.join(BUILD_DIR, 'example_cnode'), path.join(BUILD_DIR, 'tests', 'test_cnode')]) {
      if (!existsSync(f)) throw new Error(`${f} not built (NODEX_BUILD_DIR=${BUILD_DIR})`);
    }
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'nodex-node-'));
    const home = path.join(this.dir, 'home');
    mkdirSync(home, { mode: 0o700 });
    this.epmdPort = await freePort();
    this.env = {
      ...process.env,
      HOME: home,
      ERL_EPMD_PORT: String(this.epmdPort),
      NODEX_COOKIE: randomBytes(16).toString('hex').toUpperCase(),
    };
    this.procs = [];
    this.epmd = this._spawn('epmd', ['-port', String(this.epmdPort)], 'epmd');
    const deadline = Date.now() + 10000 * SLOW;
    while (!(await canConnect(this.epmdPort))) {
      if (Date.now() > deadline) throw new Error('epmd did not start');
      await sleep(50);
    }
    this.sname = `nxnode${randomBytes(4).toString('hex')}`;
    const cnodes = [
      { name: 'example', executable: path.join(BUILD_DIR, 'example_cnode'), backoff_initial_ms: 50, args: ['{sname}', '{hostname}', '{cookie}', '{gateway_sname}'] },
      testCnode('test'),
      testCnode('tagged', { reply_filter: { tag: 'reply' } }),
      testCnode('victim'),
    ];
    const config = [
      'node:',
      `  name: ${yamlStr(`${this.sname}@${HOST}`)}`,
      '  tick_time_ms: 4000',
      'http:',
      `  listen: ${yamlStr(`${HOST}:0`)}`,
      'grpc:',
      `  listen: ${yamlStr(`${HOST}:0`)}`,
      'erlang_nodes:',
      `  ready_timeout_ms: ${30000 * SLOW}`,
      '  rpc: true', // the suite exercises rpc, loading and children: off by default
      '  load_modules: true',
      '  spawn: true',
      `  rpc_nodes: [${yamlStr(`*@${HOST}`)}]`,
      'cnodes:',
      ...cnodes.map(cnodeYaml).map((s) => s.trimEnd()),
      '',
    ].join('\n');
    this.configPath = path.join(this.dir, 'nodexd.yaml');
    writeFileSync(this.configPath, config);
    this.lines = [];
    this.nodexd = spawn(path.join(BUILD_DIR, 'nodexd'), ['--config', this.configPath], {
      env: this.env, stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.procs.push(this.nodexd);
    const ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nodexd printed no ready line\n${this.tail()}`)), 20000 * SLOW);
      let buf = '';
      this.nodexd.stdout.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.lines.push(`[out] ${line}`);
          const m = READY_RE.exec(line);
          if (m) {
            clearTimeout(timer);
            if (!m[5]) reject(new Error(`no grpc= in nodexd's ready line: ${line}`));
            this.httpPort = Number(m[2]);
            this.node = m[3];
            this.grpcTarget = `${HOST}:${m[5]}`;
            resolve();
          }
        }
      });
      this.nodexd.stderr.on('data', (chunk) => {
        for (const l of String(chunk).split('\n')) if (l) this.lines.push(`[err] ${l}`);
      });
      this.nodexd.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`nodexd exited with ${code} before its ready line\n${this.tail()}`));
      });
    });
    await ready;
    return this;
  }

  tail(n = 40) {
    return this.lines.slice(-n).join('\n');
  }

  _spawn(cmd, args, name) {
    const log = openSync(path.join(this.dir, `${name}.log`), 'a');
    const p = spawn(cmd, args, { env: this.env, stdio: ['ignore', log, log] });
    closeSync(log);
    this.procs.push(p);
    return p;
  }

  /** Polls GET /cnodes/{name} (via the gRPC client given) until it is up. */
  async waitUp(gw, name, timeoutMs = 10000) {
    const deadline = Date.now() + timeoutMs * SLOW;
    for (;;) {
      try {
        const info = await gw.getCnode(name, { timeout: 2000 });
        if (info.state === 'up') return info;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) throw new Error(`${name} not up\n${this.tail()}`);
      await sleep(50);
    }
  }

  /** Ends every process we started, by pid: SIGTERM, then SIGKILL after a grace period. */
  async stop() {
    for (const p of [...(this.procs || [])].reverse()) {
      if (p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10000 * SLOW);
      await exited;
      clearTimeout(t);
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  log() {
    try {
      return readFileSync(path.join(this.dir, 'epmd.log'), 'utf8');
    } catch {
      return '';
    }
  }
}
