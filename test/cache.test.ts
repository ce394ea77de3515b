// The node image cache end to end, through the pbs_mom harness: single-flight
// ingest, overlays, leases, epilogue cleanup, kills at random moments, a full
// disk and eviction. Real qemu-img, real libguestfs, real files.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, openSync, utimesSync, writeFileSync, writeSync, ftruncateSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, testImages, type Job } from './harness/mom.js';
import { ensureLaunchUser } from './harness/launch-user.js';

// [jobfiles] owner and group default to the launch account ([launch] user): never the job owner.
const LAUNCH = ensureLaunchUser();

const script = (vm: string) => `#!/bin/bash\n#PBS -l nodes=1:ppn=2\n#VM ${vm}\nhostname\n`;
const sha256sum = (p: string) => execFileSync('sha256sum', [p], { encoding: 'utf8' }).split(' ')[0]!;
const count = (mom: Mom, msg: string) => mom.logLines().filter((l) => l.msg === msg).length;
const manifestOf = (mom: Mom, id: string) => JSON.parse(readFileSync(join(mom.jobDir, id, 'manifest.json'), 'utf8'));
const ls = (dir: string) => (existsSync(dir) ? readdirSync(dir) : []);

function cache(mom: Mom, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'cache', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A compliant raw image of its own digest: the Debian test image plus `mib` MiB of non-zero bytes after its filesystem. */
function variant(mom: Mom, name: string, mib: number, seed: number): string {
  const dst = join(mom.poolDir, name);
  execFileSync('cp', ['--sparse=always', join(testImages(), 'debian-ok.raw'), dst]);
  const chunk = Buffer.alloc(1024 * 1024, (seed % 250) + 1);
  for (let i = 0; i < mib; i++) {
    chunk.writeUInt32LE(i, 0);
    appendFileSync(dst, chunk);
  }
  return dst;
}

function qemuInfo(path: string): Record<string, unknown> {
  return JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '--force-share', path], { encoding: 'utf8' }));
}

t.test('8 prologues at once on a cold node: one ingest, one verification, an overlay per VM; a second job copies nothing; epilogues clean up', async (t) => {
  // 16 VMs on one node: small ones, with vCPUs unchecked, so that admission (src/launch/admission.ts) lets them all in.
  const mom = new Mom({ privateCache: true, ini: '[launch]\nvcpus_per_core = 0\n' });
  const jobs: Job[] = Array.from({ length: 8 }, (_, i) => ({ id: `${100 + i}.srv`, script: script('img=debian12.qcow2,vms_per_node=2,ram=512M') }));
  const rs = await Promise.all(jobs.map((j) => mom.prologue(j)));
  rs.forEach((r, i) => t.equal(r.code, 0, `job ${jobs[i]!.id}: ${r.er}`));
  t.equal(count(mom, 'image ingested'), 1, 'exactly one prologue copied the image');
  t.equal(count(mom, 'verdict stored'), 1, 'exactly one prologue ran libguestfs');
  t.ok(count(mom, 'another prologue is caching or verifying this image: waiting for it') >= 1, 'the others said why they waited');

  const m = manifestOf(mom, '100.srv');
  const base = m.base.path as string;
  t.equal(base, join(mom.cacheDir, 'images', `${m.image.sha256}.qcow2`));
  t.equal(sha256sum(base), m.image.sha256, 'the cached base is named by its content');
  const bst = statSync(base);
  t.equal(bst.mode & 0o777, 0o444, 'base images are immutable');
  t.equal(bst.uid, 0);
  t.equal(m.vms.length, 2);
  for (const vm of m.vms) {
    const info = qemuInfo(vm.overlay);
    t.equal(info.format, 'qcow2');
    t.equal(info['backing-filename'], base, 'backed by the cached base, by absolute path');
    t.equal(info['backing-filename-format'], 'qcow2');
    t.equal(vm.baseDigest, m.image.sha256, 'each VM names the digest of its base');
    const st = statSync(vm.overlay);
    t.equal(st.uid, LAUNCH.uid, '[jobfiles] owner = the launch account: never the job owner');
    t.equal(st.mode & 0o777, 0o600);
    t.equal(statSync(vm.dir).uid, 0, 'directories stay root-owned');
  }
  t.same(ls(join(mom.cacheDir, 'leases')).sort(), jobs.map((j) => `${j.id}.json`).sort(), 'one lease per job');

  const r2 = await mom.prologue({ id: '200.srv', script: script('img=debian12.qcow2') });
  t.equal(r2.code, 0, r2.er);
  t.match(r2.ou, /already cached/);
  t.equal(count(mom, 'image ingested'), 1, 'the second job did not copy');
  t.equal(count(mom, 'verdict stored'), 1, 'nor verify');

  // fs_type=ramdisk: the base is copied into RAM and the overlays live there.
  const r3 = await mom.prologue({ id: '201.srv', script: script('img=debian12.qcow2,fs_type=ramdisk,vms_per_node=2') });
  t.equal(r3.code, 0, r3.er);
  const rm = manifestOf(mom, '201.srv');
  const shm = join(mom.root, 'shm', '201.srv');
  t.equal(rm.base.ramdiskCopy, join(shm, 'base.qcow2'));
  t.equal(rm.vms[1].overlay, join(shm, 'vm-1', 'disk.qcow2'));
  t.equal(qemuInfo(rm.vms[1].overlay)['backing-filename'], join(shm, 'base.qcow2'));
  t.equal(sha256sum(join(shm, 'base.qcow2')), m.image.sha256);

  const listed = JSON.parse(cache(mom, 'list', '--json').out);
  t.equal(listed.images.length, 1);
  t.equal(listed.images[0].leases.length, 10, 'cache list shows every job holding it');
  t.same(listed.images[0].sources, ['debian12.qcow2'], 'and the pool name that maps to it');

  for (const j of [...jobs, { id: '200.srv' }, { id: '201.srv' }]) {
    const e = await mom.run('epilogue', j);
    t.equal(e.code, 0, e.er);
  }
  // .admission holds running prologues' reservations (launch/admission.ts): none is left.
  t.same(ls(mom.jobDir).filter((n) => n !== '.admission'), [], 'every job directory is gone');
  t.same(ls(join(mom.jobDir, '.admission')), [], 'and every admission reservation');
  t.notOk(existsSync(shm), 'the ramdisk copy is gone');
  t.same(ls(join(mom.cacheDir, 'leases')), [], 'every lease is gone');
  t.ok(existsSync(base), 'the cached base stays for the next job');
});

t.test('a prologue killed at 20 random moments of a cold ingest leaves nothing the next one trips over', async (t) => {
  const mom = new Mom({ privateCache: true, ini: '[cache]\nlock_stale = 2s\n' });
  variant(mom, 'big.raw', 448, 7);
  const job = (id: string): Job => ({ id, script: script('img=big.raw') });
  // The first run verifies (libguestfs); then measure a cold ingest alone.
  const first = await mom.prologue(job('1.srv'));
  t.equal(first.code, 0, first.er);
  const digest = manifestOf(mom, '1.srv').image.sha256 as string;
  await mom.run('epilogue', job('1.srv'));
  // Boot files as the launcher extracts them (src/launch/bootfiles.ts) go with the base.
  mkdirSync(join(mom.cacheDir, 'kernels', digest), { recursive: true });
  writeFileSync(join(mom.cacheDir, 'kernels', digest, 'boot.json'), '{"kernel":false,"source":"none"}\n');
  t.equal(cache(mom, 'evict', digest).code, 0);
  t.notOk(existsSync(join(mom.cacheDir, 'kernels', digest)), 'an evicted base takes its boot files with it');
  const cold = await mom.prologue(job('2.srv'));
  t.equal(cold.code, 0, cold.er);
  await mom.run('epilogue', job('2.srv'));
  const span = cold.ms;
  const images = join(mom.cacheDir, 'images');
  // 16 kills at random times spread over a cold run, and 8 at the moments that
  // matter, found in the log: copy started, copy done (before the rename),
  // image ready (after the rename, lease written), overlays and seeds made (before the manifest).
  const marks = ['copying the image into the cache', 'image ingested', 'image ready', 'overlays and seeds made'];
  const plan = [...Array.from({ length: 16 }, (_, i) => ({ at: ((i + Math.random()) / 16) * span * 0.8 })), ...[...marks, ...marks].map((mark) => ({ mark }))];
  const phases = { copying: 0, lockHeld: 0, afterRename: 0, total: 0 };
  let slowest = 0;
  for (const [i, p] of plan.entries()) {
    const ev = cache(mom, 'evict', digest);
    t.equal(ev.code, 0, `round ${i}: evicted ${ev.err}`);
    const id = `${1000 + i}.srv`;
    let killed = false;
    const kill = (pid: number) => {
      try {
        process.kill(-pid, 'SIGKILL');
        killed = true;
      } catch {
        /* it had ended */
      }
    };
    await mom.prologue(job(id), {
      onSpawn: (pid) => {
        if ('at' in p) return void setTimeout(() => kill(pid), p.at!);
        const poll = setInterval(() => {
          if (mom.logLines().some((l) => l.job === id && l.msg === p.mark)) {
            clearInterval(poll);
            kill(pid);
          }
        }, 2);
        setTimeout(() => clearInterval(poll), 30_000).unref();
      },
    });
    if (killed) {
      phases.total++;
      if (ls(join(mom.cacheDir, 'tmp')).some((n) => n.endsWith('.part'))) phases.copying++;
      if (ls(join(mom.cacheDir, 'locks')).some((n) => n.startsWith('img-') && n.endsWith('.lock'))) phases.lockHeld++;
      if (ls(images).some((n) => n === `${digest}.raw`)) phases.afterRename++;
    }
    const next = await mom.prologue(job(`${2000 + i}.srv`));
    t.equal(next.code, 0, `round ${i} (${JSON.stringify(p)}): the next prologue succeeds: ${next.er}`);
    slowest = Math.max(slowest, next.ms);
    t.same(ls(images).filter((n) => !n.endsWith('.json')), [`${digest}.raw`], 'only the complete base is visible');
    t.same(ls(join(mom.cacheDir, 'tmp')), [], 'no partial copy survives the next run');
    await mom.run('epilogue', job(id));
    await mom.run('epilogue', job(`${2000 + i}.srv`));
  }
  t.equal(sha256sum(join(images, `${digest}.raw`)), digest, 'the base is intact');
  // Whether a timed kill lands before the run ends depends on the machine's load (a busy CI machine
  // stretches one run and not the next): what must hold is that the kills reached every phase.
  t.ok(phases.total >= plan.length / 2 && phases.copying > 0 && phases.lockHeld > 0 && phases.afterRename > 0,
    `kills landed inside the run, in every phase: while copying, with the image lock held, after the rename (${JSON.stringify(phases)} of ${plan.length})`);
  t.ok(phases.copying >= 2, `kills mid-copy (${phases.copying})`);
  t.ok(phases.lockHeld >= 4, `kills with the lock held (${phases.lockHeld})`);
  t.ok(phases.afterRename >= 4, `kills after the rename (${phases.afterRename})`);
  t.ok(slowest < span + 2000 + 10_000, `a stale lock was recovered within the bounded wait (slowest next run ${Math.round(slowest)} ms)`);
});

t.test('a cache on a small filesystem: an image it can never hold is the job\'s fault; one that fills it mid-copy is exit 2; nothing is left behind', async (t) => {
  const mom = new Mom({ privateCache: true });
  const small = join(mom.root, 'small');
  mkdirSync(small);
  // mode=0755: a fresh tmpfs is 1777, which the prologue rightly refuses as a cache_dir.
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=48m,mode=0755', 'tmpfs', small], { encoding: 'utf8' });
  if (mounted.status !== 0) {
    t.comment(`SKIP: this machine cannot mount a small tmpfs: ${mounted.stderr.trim()}`);
    return void t.pass('skipped: no tmpfs mount here', { skip: true });
  }
  t.teardown(() => void spawnSync('umount', [small]));
  const ini = readFileSync(mom.configFile, 'utf8').replace(`cache_dir = ${mom.cacheDir}`, `cache_dir = ${small}/cache`);
  writeFileSync(mom.configFile, ini + '[cache]\nmin_free = 0\n');

  // Too big by its own size, for a cache filesystem that could never hold it: refused before a byte is
  // written, as the job's image (exit 1), never as the node's fault: the node takes smaller images.
  variant(mom, 'big.raw', 80, 3);
  const r = await mom.prologue({ id: '1.srv', script: script('img=big.raw') });
  t.equal(r.code, 1, 'the image can never fit this node: the job\'s fault');
  t.match(r.er, /image needs 8\d\.\d MiB in this node's image cache, more than it can ever hold/);
  t.match(r.er, /this node's cache holds at most 4\d\.\d MiB \(max_size 200 GiB; its filesystem is 4\d\.\d MiB, min_free 0 B\)/);
  t.match(r.er, /Fix: use a smaller image/);
  t.same(mom.pbsnodesCalls().filter((c) => / -o /.test(` ${c} `)), [], 'and the node is not offlined');

  // Small on disk (sparse: 4 KiB in every 64 KiB) but not once copied in 64 KiB blocks: the disk fills mid-copy.
  const sparse = join(mom.poolDir, 'sparse.raw');
  const fd = openSync(sparse, 'w');
  for (let kib = 0; kib < 160 * 1024; kib += 64) writeSync(fd, Buffer.from('x'), 0, 1, kib * 1024 + 7);
  ftruncateSync(fd, 160 * 1024 * 1024);
  closeSync(fd);
  const r2 = await mom.prologue({ id: '2.srv', script: script('img=sparse.raw') });
  t.equal(r2.code, 2, r2.er);
  t.match(r2.er, /the cache filesystem filled up while caching image sparse\.raw/);
  t.match(r2.er, /ENOSPC/);
  t.same(ls(join(small, 'cache', 'tmp')), [], 'no partial copy left');
  t.same(ls(join(small, 'cache', 'images')), [], 'no entry');
  t.same(ls(join(small, 'cache', 'locks')).filter((n) => n.endsWith('.lock')), [], 'no lock left');
  t.ok(statSync(small).isDirectory());
});

t.test('eviction: past max_size the least recently used unleased image goes, a leased one stays', async (t) => {
  const mom = new Mom({ privateCache: true });
  for (const [n, seed] of [['a.raw', 11], ['b.raw', 12], ['c.raw', 13]] as const) variant(mom, n, 24, seed);
  // One appliance verifies all three; the jobs then only copy.
  const chk = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'a.raw', 'b.raw', 'c.raw'], { encoding: 'utf8', timeout: 600_000 });
  t.equal(chk.status, 0, chk.stdout + chk.stderr);
  const run = async (id: string, img: string) => {
    const r = await mom.prologue({ id, script: script(`img=${img}`) });
    t.equal(r.code, 0, `${id} on ${img}: ${r.er}`);
    return manifestOf(mom, id).image.sha256 as string;
  };
  const B = await run('1.srv', 'b.raw'); // keeps running: leased
  await new Promise((r) => setTimeout(r, 50));
  const A = await run('2.srv', 'a.raw');
  await mom.run('epilogue', { id: '2.srv' });
  const one = (JSON.parse(cache(mom, 'list', '--json').out).images as { allocated: number }[])[0]!.allocated;
  // Room for two, not three.
  appendFileSync(mom.configFile, `[cache]\nmax_size = ${Math.floor(one * 2.5)}\nmin_free = 0\n`);

  const C = await run('3.srv', 'c.raw');
  const held = () => ls(join(mom.cacheDir, 'images')).filter((n) => n.endsWith('.raw')).map((n) => n.slice(0, 64)).sort();
  t.same(held(), [B, C].sort(), 'A (unleased) was evicted although B was used longer ago: B is leased');
  t.ok(mom.logLines().some((l) => l.msg === 'evicted from the cache' && l.digest === A));

  // Now everything cached is leased: no room for A again.
  const r = await mom.prologue({ id: '4.srv', script: script('img=a.raw') });
  t.equal(r.code, 2);
  t.match(r.er, /no room for a .* image/);
  t.match(r.er, /held by running jobs/);
  t.same(held(), [B, C].sort(), 'nothing leased was touched');
  t.match(cache(mom, 'evict', B.slice(0, 12)).err, /in use by job 1\.srv; not evicted/);

  // Least recently used first: B ends, then C is used again; A must displace B.
  await mom.run('epilogue', { id: '1.srv' });
  await mom.run('epilogue', { id: '3.srv' });
  await run('5.srv', 'c.raw');
  await mom.run('epilogue', { id: '5.srv' });
  await run('6.srv', 'a.raw');
  t.same(held(), [A, C].sort(), 'B, the least recently used, went');

  // cache verify catches a base whose bytes changed, and moves it aside.
  await mom.run('epilogue', { id: '6.srv' });
  const victim = join(mom.cacheDir, 'images', `${C}.raw`);
  execFileSync('chmod', ['u+w', victim]);
  const fd = openSync(victim, 'r+');
  writeSync(fd, Buffer.from('rot'), 0, 3, 1000);
  closeSync(fd);
  const v = cache(mom, 'verify', '--json');
  t.equal(v.code, 1, 'a mismatch is reported with exit 1');
  const vr = JSON.parse(v.out);
  t.equal(vr.mismatches, 1);
  t.notOk(existsSync(victim), 'the bad base is no longer used');
  t.ok(existsSync(vr.images.find((i: { ok: boolean }) => !i.ok).quarantined), 'it is kept in quarantine for the admin');
  const gc = JSON.parse(cache(mom, 'gc', '--json').out);
  t.same(gc.tmpRemoved, []);
});

t.test('cache gc sweeps the leases of jobs Torque no longer has (asking qstat), keeps the rest, and says when qstat cannot answer', async (t) => {
  const mom = new Mom({ privateCache: true });
  t.equal(cache(mom, 'list').code, 0);
  const leases = join(mom.cacheDir, 'leases');
  const lease = (job: string, ageDays = 0) => {
    const f = join(leases, `${job}.json`);
    writeFileSync(f, JSON.stringify({ job, node: 'node01', digests: ['e'.repeat(64)], createdAt: new Date().toISOString() }) + '\n');
    if (ageDays > 0) {
      const old = new Date(Date.now() - ageDays * 86400_000);
      utimesSync(f, old, old);
    }
  };
  // 41 runs (the server has it R), 42 was deleted during its prologue (unknown to the server, the mom has no .JB),
  // 43 is unknown to the server but this mom still holds it, 44 completed (keep_completed shows it as C).
  mom.submit({ id: '41.srv', qstat: { job_state: 'R' } });
  mom.submit({ id: '44.srv', qstat: { job_state: 'C' } });
  writeFileSync(join(mom.momPriv, 'jobs', '43.srv.JB'), '');
  for (const j of ['41.srv', '42.srv', '43.srv', '44.srv']) lease(j);
  // Job-ended markers: one from long ago (swept), one fresh (a prologue may still need it).
  mkdirSync(join(mom.cacheDir, 'ended'), { mode: 0o700 });
  writeFileSync(join(mom.cacheDir, 'ended', '40.srv.json'), '{}\n');
  const old = new Date(Date.now() - 86400_000);
  utimesSync(join(mom.cacheDir, 'ended', '40.srv.json'), old, old);
  writeFileSync(join(mom.cacheDir, 'ended', '41.srv.json'), '{}\n');

  const gc = cache(mom, 'gc', '--json');
  t.equal(gc.code, 0, gc.err);
  const r = JSON.parse(gc.out);
  t.same(r.leasesSwept.sort(), ['42.srv', '44.srv'], 'the deleted and the completed job');
  t.same(r.jobsGone.sort(), ['42.srv', '44.srv']);
  t.equal(r.qstatUnavailable, null);
  t.same(ls(leases).sort(), ['41.srv.json', '43.srv.json'], 'a running job, and one this mom still has, keep theirs');
  t.same(r.endedMarkersSwept, ['40.srv']);
  t.same(ls(join(mom.cacheDir, 'ended')), ['41.srv.json']);
  t.ok(mom.qstatCalls().includes('-f -1 42.srv'), 'qstat was asked about the job by its id');
  t.notOk(mom.qstatCalls().some((c) => c.includes('43.srv')), 'not about a job the mom still holds');
  const text = cache(mom, 'gc');
  t.match(text.out, /swept 0 stale leases/);

  // pbs_server down: nothing is judged by qstat, only by age.
  lease('45.srv');
  lease('46.srv', 15);
  writeFileSync(join(mom.root, 'bin', 'qstat'), `#!/bin/sh\necho "$*" >> ${mom.root}/qstat.calls\necho "qstat: cannot connect to server head (errno=111) Connection refused" >&2\nexit 1\n`);
  const before = mom.qstatCalls().length;
  const down = cache(mom, 'gc');
  t.equal(down.code, 0, 'the rest of gc ran');
  t.match(down.out, /swept 1 stale lease: 46\.srv\n/, 'older than lease_max_age, unknown to this mom: swept as before');
  t.match(down.err, /^vtorque: qstat could not say which jobs Torque still has \(.*cannot connect to server.*\); leases of jobs this node no longer runs were kept until \[cache\] lease_max_age \(1209600 s\)\. Fix: /m);
  t.ok(existsSync(join(leases, '45.srv.json')), 'an unknown job\'s lease is kept while qstat cannot answer');
  t.equal(mom.qstatCalls().length - before, 1, 'asked once, then no more: the first failure ends the asking');
});
