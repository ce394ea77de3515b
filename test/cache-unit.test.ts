// The cache's building blocks on real files: the one-pass copy, leases, locks and overlays.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync, existsSync, openSync, writeSync, closeSync, ftruncateSync, utimesSync, mkdirSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyAndHash, SourceChanged } from '../src/cache/copy.js';
import { acquireLock, tryLock } from '../src/cache/lock.js';
import { parseConfig } from '../src/config/load.js';
import { layoutOf, ensureLayout } from '../src/cache/layout.js';
import { isStale, readLeases, sweepLeases, writeLease } from '../src/cache/leases.js';
import { jobKnownToTorque } from '../src/torque/engine.js';
import { reservations, spaceView } from '../src/cache/space.js';
import { isNodeFault } from '../src/core/errors.js';
import { backingFor, overlayMaker } from '../src/cache/overlays.js';

const dir = () => mkdtempSync(join(tmpdir(), 'vtorque-cache-'));
const sha256sum = (p: string) => execFileSync('sha256sum', [p], { encoding: 'utf8' }).split(' ')[0];

t.test('copyAndHash copies byte for byte and returns what sha256sum says', async (t) => {
  const d = dir();
  const src = join(d, 'src.img');
  // Data, a zero 64 KiB block, data again, and a tail that is not a whole block.
  const buf = Buffer.alloc(9 * 1024 * 1024 + 12345);
  for (let i = 0; i < buf.length; i += 4096) if (i < 65536 || i >= 131072) buf.writeUInt32LE(i + 1, i);
  writeFileSync(src, buf);
  const r = await copyAndHash(src, join(d, 'dst.img'), { clone: false });
  t.equal(r.digest, sha256sum(src));
  t.equal(r.bytes, buf.length);
  t.ok(readFileSync(join(d, 'dst.img')).equals(buf));
  t.equal(statSync(join(d, 'dst.img')).mode & 0o777, 0o600, 'private until the caller publishes it');
});

t.test('a sparse source stays sparse, zero tail included', async (t) => {
  const d = dir();
  const src = join(d, 'sparse.raw');
  const fd = openSync(src, 'w');
  writeSync(fd, Buffer.from('head'), 0, 4, 0);
  writeSync(fd, Buffer.from('middle'), 0, 6, 40 * 1024 * 1024);
  ftruncateSync(fd, 100 * 1024 * 1024);
  closeSync(fd);
  const r = await copyAndHash(src, join(d, 'dst.raw'), { clone: false });
  const st = statSync(join(d, 'dst.raw'));
  t.equal(st.size, 100 * 1024 * 1024);
  t.equal(r.digest, sha256sum(src));
  t.ok(st.blocks * 512 <= 256 * 1024, `allocates two 64 KiB blocks or so, not 100 MiB (${st.blocks * 512})`);
});

t.test('copyAndHash refuses a source that is not the authorised file, and reports progress', async (t) => {
  const d = dir();
  const src = join(d, 'a');
  writeFileSync(src, Buffer.alloc(12 * 1024 * 1024, 1));
  const st = statSync(src);
  const e = await copyAndHash(src, join(d, 'b'), { expect: { dev: st.dev, ino: st.ino + 1 } }).catch((x) => x);
  t.ok(e instanceof SourceChanged, String(e));
  t.notOk(existsSync(join(d, 'b')), 'nothing written');
  const seen: number[] = [];
  await copyAndHash(src, join(d, 'c'), { clone: false, progressEveryMs: 0, onProgress: (p) => seen.push(p.bytes) });
  t.same(seen, [4, 8, 12].map((m) => m * 1024 * 1024), 'one report per chunk when asked for every 0 ms');
});

t.test('a lock is exclusive, waits are bounded, and a dead holder is taken over after lock_stale', async (t) => {
  const d = dir();
  const release = await acquireLock('img-x', { dir: d, waitSeconds: 1, staleSeconds: 2 });
  t.equal(await tryLock('img-x', { dir: d, staleSeconds: 2 }), undefined, 'held: tryLock gives up at once');
  const t0 = Date.now();
  const err = await acquireLock('img-x', { dir: d, waitSeconds: 1, staleSeconds: 2 }).catch((e) => e);
  t.ok(isNodeFault(err) && err.problems[0]!.id === 'cache-lock-wait', 'a wait past waitSeconds is a node fault');
  t.ok(Date.now() - t0 < 2500, 'and it is bounded');
  await release();
  // A holder killed with SIGKILL leaves the lock directory and stops refreshing its mtime.
  mkdirSync(join(d, 'img-y.lock'));
  const old = new Date(Date.now() - 5000);
  utimesSync(join(d, 'img-y.lock'), old, old);
  const r2 = await acquireLock('img-y', { dir: d, waitSeconds: 1, staleSeconds: 2 });
  t.pass('an abandoned lock is taken over');
  await r2();
  const ac = new AbortController();
  const r3 = await acquireLock('img-z', { dir: d, waitSeconds: 30, staleSeconds: 10 });
  setTimeout(() => ac.abort(), 200);
  const t1 = Date.now();
  await t.rejects(acquireLock('img-z', { dir: d, waitSeconds: 30, staleSeconds: 10, signal: ac.signal }));
  t.ok(Date.now() - t1 < 2000, 'the run deadline ends a lock wait');
  await r3();
});

t.test('leases: a stale one is swept only when old and unknown to Torque', async (t) => {
  const d = dir();
  const { config } = parseConfig(`[paths]\ncache_dir = ${d}/cache\ntorque_home = ${d}/torque\n[cache]\nlease_max_age = 1h\n`, 'x.ini');
  const l = layoutOf(config);
  ensureLayout(l);
  const dg = 'a'.repeat(64);
  writeLease(l, { job: '1.srv', node: 'n', digests: [dg], createdAt: '' });
  writeLease(l, { job: '2.srv', node: 'n', digests: [dg], createdAt: '' });
  writeLease(l, { job: '3.srv', node: 'n', digests: ['b'.repeat(64)], createdAt: '' });
  const old = new Date(Date.now() - 2 * 3600 * 1000);
  for (const j of ['2.srv', '3.srv']) utimesSync(join(l.leases, `${j}.json`), old, old);
  mkdirSync(join(d, 'torque/mom_priv/jobs'), { recursive: true });
  writeFileSync(join(d, 'torque/mom_priv/jobs/3.srv.JB'), '');
  t.same(readLeases(l).map((f) => isStale(config, f, jobKnownToTorque)).sort(), [false, false, true]);
  const { held, swept } = sweepLeases(config, l, jobKnownToTorque);
  t.same(swept, ['2.srv'], 'old and gone from Torque');
  t.same(held.get(dg), ['1.srv']);
  t.same(held.get('b'.repeat(64)), ['3.srv'], 'old, but Torque still has the job');
});

t.test('a partial copy of a dead process is swept, a live one is a reservation', async (t) => {
  const d = dir();
  const { config } = parseConfig(`[paths]\ncache_dir = ${d}/cache\n[cache]\nmin_free = 0\n`, 'x.ini');
  const l = layoutOf(config);
  ensureLayout(l);
  const dead = execFileSync('sh', ['-c', 'sh -c "echo \\$\\$"'], { encoding: 'utf8' }).trim();
  writeFileSync(join(l.tmp, `${'c'.repeat(64)}.${dead}.1000.part`), 'x');
  writeFileSync(join(l.tmp, `${'d'.repeat(64)}.1.5000000.part`), 'x'); // pid 1 is alive
  writeFileSync(join(l.tmp, 'junk'), 'x');
  const before = spaceView(config, l);
  t.equal(before.reserved, 5000000, 'a dead process reserves nothing');
  t.ok(existsSync(join(l.tmp, 'junk')), 'spaceView only looks');
  const { live, swept } = reservations(l);
  t.same(swept.sort(), [`${'c'.repeat(64)}.${dead}.1000.part`, 'junk']);
  t.same(live.map((r) => r.bytes), [5000000]);
  t.equal(spaceView(config, l).reserved, 5000000);
});

t.test('overlays: the copies of the first are the bytes qemu-img makes for each VM, with the right owner and mode', async (t) => {
  const d = dir();
  const { config } = parseConfig(`[paths]\ncache_dir = ${d}/cache\njob_dir = ${d}/jobs\n`, 'x.ini');
  for (const format of ['qcow2', 'raw']) {
    const basePath = join(d, `base.${format}`);
    execFileSync('qemu-img', ['create', '-q', '-f', format, basePath, '64M']);
    const dirs = { dir: join(d, 'jobs', `1.${format}`) };
    mkdirSync(dirs.dir, { recursive: true });
    const owner = { uid: 65534, gid: 65534, fileMode: 0o640, dirMode: 0o750 };
    const o = { config, base: { digest: 'x', path: basePath, format, size: 0 }, dirs, owner };
    const make = overlayMaker(o, backingFor(o));
    const made = await Promise.all([0, 1, 2].map((i) => make(i)));
    t.same(made.map((o) => o.index), [0, 1, 2]);
    // The control: what qemu-img itself writes for a VM's overlay, made now.
    const control = join(d, `control-${format}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', format, '-b', basePath, control]);
    for (const o of made) {
      t.equal(o.path, join(dirs.dir, `vm-${o.index}`, 'disk.qcow2'));
      t.ok(readFileSync(o.path).equals(readFileSync(control)), `${format} vm-${o.index}: the same bytes as qemu-img create`);
      const st = statSync(o.path);
      t.same([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o640], `${format} vm-${o.index}: owner and mode`);
      const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', o.path], { encoding: 'utf8' })) as Record<string, unknown>;
      t.equal(info['backing-filename'], basePath);
      t.equal(info['backing-filename-format'], format);
      t.same(readdirSync(join(dirs.dir, `vm-${o.index}`)), ['disk.qcow2'], 'no temporary file left');
    }
    // Each VM writes its own overlay: a write to one leaves the others as they were.
    execFileSync('qemu-io', ['-c', 'write -P 0x5a 0 64k', made[1]!.path], { stdio: 'ignore' });
    t.ok(readFileSync(made[2]!.path).equals(readFileSync(control)), `${format}: vm-2 untouched by a write to vm-1`);
  }
});

t.test('a cache_dir another path made first under umask 0077 is opened up, so the launch account reaches the bases', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vtorque-layout-'));
  chmodSync(root, 0o755);
  const dir = join(root, 'cache');
  mkdirSync(join(dir, 'statmemo'), { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700); // as a stat memo written by check --image left it
  const l = layoutOf(parseConfig(`[paths]\ncache_dir = ${dir}\n`, 't.ini').config);
  ensureLayout(l);
  t.equal(statSync(dir).mode & 0o777, 0o755);
  t.equal(statSync(l.images).mode & 0o777, 0o755);
  t.equal(statSync(l.statmemo).mode & 0o777, 0o755, "the stat memos too: users' check --job finds a pool image's digest there");
  t.equal(statSync(l.verdicts).mode & 0o777, 0o755, 'and the verdicts');
});
