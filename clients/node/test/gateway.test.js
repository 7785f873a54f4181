// Integration tests of the Node.js client against a live nodexd (gRPC) with real C-nodes and Erlang.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  Gateway, NodexError, BadRpc, atom, tuple, Tuple, Atom, ImproperList, BitString, Charlist, Pid,
  Ref, SELF, Etf, status,
} from '../src/index.js';
import { Nodexd } from './harness.js';

let nodexd;
let gw;

before(async () => {
  nodexd = new Nodexd();
  await nodexd.start();
  gw = new Gateway(nodexd.grpcTarget);
  for (const name of ['example', 'test', 'tagged', 'victim']) await nodexd.waitUp(gw, name);
});

after(async () => {
  gw?.close();
  await nodexd?.stop();
});

const b = (s) => Buffer.from(s);

test('README example: ping/pong', async () => {
  assert.deepEqual(await gw.call('example', tuple(atom('ping'), b('hello')), { timeout: 5000 }),
    tuple(atom('pong'), b('hello')));
});

test('a string is sent as a binary', async () => {
  assert.deepEqual(await gw.call('example', tuple(atom('ping'), 'héllo')), tuple(atom('pong'), b('héllo')));
});

test('every type round-trips through a C-node', async () => {
  const all = tuple(
    atom('all'), 0, -1, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n + 1n, -(10n ** 30n), 1.5, b(''),
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)), new BitString(Buffer.from([1, 2, 0x18]), 21),
    [], [1, 2, 300], [atom('a'), [b('b')]], new ImproperList([1, 2], atom('t')), tuple(),
    tuple(1, tuple(2, tuple(3))), new Map(), new Map([[b('k'), [1]]]),
    new Map([[tuple(1, atom('x')), new Map([[b('deep'), tuple(0.25)]])], [[1], atom('list key')]]),
    true, false, atom('with space'), atom('ünï'),
  );
  assert.deepEqual(await gw.call('test', tuple(atom('ping'), all), { timeout: 10000 }), tuple(atom('pong'), all));
});

test('charlist comes back as code points', async () => {
  assert.deepEqual(await gw.call('test', tuple(atom('ping'), new Charlist('abc'))), tuple(atom('pong'), [97, 98, 99]));
});

test('raw ETF in and out', async () => {
  const req = new Etf(Buffer.from('\x83h\x02d\x00\x04pingm\x00\x00\x00\x01x', 'latin1'));
  const reply = await gw.call('example', req, { asEtf: true });
  assert.ok(reply instanceof Etf && reply.bytes[0] === 131);
  assert.deepEqual(await gw.call('example', req), tuple(atom('pong'), b('x')));
});

test('SELF receives the reply', async () => {
  assert.deepEqual(await gw.call('test', tuple(atom('reply_to'), SELF, b('rt'))), tuple(atom('pong'), b('rt')));
});

test('unknown C-node: NodexError NOT_FOUND', async () => {
  await assert.rejects(gw.call('nosuch', atom('x')), (e) => {
    assert.ok(e instanceof NodexError);
    assert.equal(e.code, status.NOT_FOUND);
    assert.equal(e.codeName, 'NOT_FOUND');
    return true;
  });
  await assert.rejects(gw.getCnode('nosuch'), (e) => e.code === status.NOT_FOUND);
});

test('timeout: DEADLINE_EXCEEDED', async () => {
  const t0 = Date.now();
  await assert.rejects(gw.call('test', tuple(atom('sleep'), 3000, b('z')), { timeout: 300 }),
    (e) => e instanceof NodexError && e.code === status.DEADLINE_EXCEEDED);
  assert.ok(Date.now() - t0 < 2500);
});

test('abort signal cancels a call', async () => {
  const ac = new AbortController();
  const p = gw.call('test', tuple(atom('sleep'), 2000, b('z')), { signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(p, (e) => e.code === status.CANCELLED);
});

test('cast, list and get', async () => {
  await gw.cast('example', tuple(atom('ping'), b('cast')));
  const names = (await gw.listCnodes()).map((c) => c.name);
  for (const n of ['example', 'test', 'tagged', 'victim']) assert.ok(names.includes(n));
  const info = await gw.getCnode('example');
  assert.equal(info.state, 'up');
  assert.ok(info.osPid > 0 && info.node.includes('@') && typeof info.callsTotal === 'number');
});

test('callStream yields every message, the reply last', async () => {
  const msgs = [];
  for await (const m of gw.callStream('tagged', tuple(atom('noise'), 3, b('s')), { timeout: 10000 })) msgs.push(m);
  assert.deepEqual(msgs.map((m) => m.final), [false, false, false, true]);
  assert.deepEqual(msgs.slice(0, 3).map((m) => m.message), [1, 2, 3].map((i) => tuple(atom('noise'), i)));
  const last = msgs[3].message;
  const pong = tuple(atom('pong'), b('s'));
  assert.ok(assertDeep(last, pong) || assertDeep(last, tuple(atom('reply'), pong)), String(last));
});

function assertDeep(a, e) {
  try {
    assert.deepEqual(a, e);
    return true;
  } catch {
    return false;
  }
}

test('callStream of an unknown C-node rejects', async () => {
  await assert.rejects(async () => {
    for await (const m of gw.callStream('nosuch', atom('x'))) void m;
  }, (e) => e instanceof NodexError && e.code === status.NOT_FOUND);
});

test('100 concurrent calls each get their own reply', async () => {
  const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => gw.call('test', tuple(atom('ping'), i))));
  replies.forEach((r, i) => assert.deepEqual(r, tuple(atom('pong'), i)));
});

test('watch sees a crash and the restart', { timeout: 60000 }, async () => {
  const stream = gw.watch({ includeCurrent: true, timeout: 60000 });
  const it = stream[Symbol.asyncIterator]();
  async function until(pred, what) {
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      const { value, done } = await it.next();
      if (done) break;
      if (pred(value)) return value;
    }
    throw new Error(`no event: ${what}`);
  }
  try {
    const first = await until((e) => e.kind === 'cnode' && e.name === 'victim', 'victim current');
    assert.equal(first.state, 'up');
    const oldPid = (await gw.getCnode('victim')).osPid;
    await gw.cast('victim', atom('crash'));
    await until((e) => e.name === 'victim' && ['down', 'restarting'].includes(e.state), 'victim down');
    const up = await until((e) => e.name === 'victim' && e.state === 'up', 'victim up again');
    assert.ok(up.osPid !== oldPid && up.seq > first.seq && up.timeMs > 0);
  } finally {
    stream.cancel();
    await it.return?.();
  }
});

test('node operations: spawn, rpc, load_module, stop', { timeout: 120000 }, async () => {
  const [node] = await gw.spawnNodes(1, { timeout: 60000 });
  assert.ok(node);
  try {
    const listed = (await gw.listNodes()).find((n) => n.node === node);
    assert.ok(listed && listed.child && listed.connected);
    assert.equal(await gw.rpc(node, 'erlang', 'node', []), atom(node));
    assert.deepEqual(await gw.rpc(node, 'lists', 'reverse', [[1, 2, 3]]), [3, 2, 1]);
    assert.equal(await gw.rpc(node, 'erlang', 'element', [2, tuple(atom('a'), 2n ** 70n)]), 2n ** 70n);
    const pid = await gw.rpc(node, 'erlang', 'whereis', [atom('init')]);
    assert.ok(pid instanceof Pid && pid.etf[0] === 131);
    assert.equal(await gw.rpc(node, 'erlang', 'is_pid', [pid]), true);
    const ref = await gw.rpc(node, 'erlang', 'make_ref', []);
    assert.ok(ref instanceof Ref);
    await assert.rejects(gw.rpc(node, 'nosuchmod', 'f', []), (e) => {
      assert.ok(e instanceof BadRpc && e.reason instanceof Tuple && e.reason[0] === atom('EXIT'));
      return true;
    });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'nodex-beam-'));
    try {
      writeFileSync(path.join(dir, 'nxnode_mod.erl'), '-module(nxnode_mod).\n-export([hello/1]).\nhello(X) -> {hello, X}.\n');
      execFileSync('erlc', ['-o', dir, path.join(dir, 'nxnode_mod.erl')]);
      await gw.loadModule(node, 'nxnode_mod', readFileSync(path.join(dir, 'nxnode_mod.beam')), { timeout: 30000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(await gw.rpc(node, 'nxnode_mod', 'hello', [b('w')]), tuple(atom('hello'), b('w')));
  } finally {
    await gw.stopNode(node, { timeout: 30000 });
  }
  // StopNode answers once the stop has begun; the node leaves the cluster shortly after.
  const deadline = Date.now() + 15000;
  while ((await gw.listNodes()).some((n) => n.node === node && n.connected)) {
    assert.ok(Date.now() < deadline, `${node} still connected after stopNode`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('unreachable gateway: UNAVAILABLE', async () => {
  const g = new Gateway('127.0.0.1:1');
  try {
    await assert.rejects(g.listCnodes({ timeout: 2000 }),
      (e) => e instanceof NodexError && [status.UNAVAILABLE, status.DEADLINE_EXCEEDED].includes(e.code));
  } finally {
    g.close();
  }
});

test('Atom class is exported for instanceof checks', () => {
  assert.ok(atom('x') instanceof Atom);
});

test('the README example runs', async () => {
  const { readFileSync: read, writeFileSync: write, rmSync: rm } = await import('node:fs');
  const { execFile } = await import('node:child_process');
  const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..');
  const readme = read(path.join(root, 'README.md'), 'utf8');
  const code = readme.split('```js\n')[1].split('```')[0].replace("'localhost:50051'", `'${nodexd.grpcTarget}'`);
  // Inside the package, 'nodex-client' resolves to itself (package self-reference).
  const file = path.join(root, `.readme-example-${process.pid}.mjs`);
  write(file, code);
  try {
    const out = await new Promise((resolve, reject) => {
      execFile(process.execPath, [file], { timeout: 30000 }, (err, stdout, stderr) =>
        (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
    });
    assert.match(out, /^true hello$/m);
    assert.match(out, /^NOT_FOUND /m);
  } finally {
    rm(file, { force: true });
  }
});
