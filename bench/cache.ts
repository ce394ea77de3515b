// bench/cache: the node image cache against what it replaces, measured in one run on the same files.
//   P3  cold ingest of a 1 GiB image (copy + sha256 + fsync, one pass)  vs max(cp, sha256sum)   target <= 1.1
//   P5  8 concurrent cold prologues for one image                        vs one cold prologue     target <= 1.3
//   P6  peak RSS of a prologue that ingests a 4 GiB image                                          target <= 100 MB
//   P7  job start, 2 GiB image, 4 VMs                                    vs vTorque's staging (a full copy per VM)
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, REPO, testImages, type Job } from '../test/harness/mom.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const ONLY = (process.env.ONLY ?? 'P3,P5,P6,P7').split(',');
const W = join(REPO, '.cache', 'bench-cache');
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = Math.floor(s.length / 2); return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };
const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function timed(cmd: string, args: string[]): Promise<{ ms: number; code: number | null; out: string }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let out = '';
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code, out }));
  });
}

/** `mib` MiB of non-zero, non-repeating-per-chunk bytes appended to `path` (created if absent). */
function fill(path: string, mib: number): void {
  const fd = openSync(path, 'a');
  const chunk = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let i = 0; i < mib; i++) {
    chunk.writeUInt32LE(i, 0);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

/** A compliant raw guest image of about `mib` MiB: the Debian test image with data after its filesystem. */
function guestImage(mom: Mom, name: string, mib: number): void {
  const dst = join(mom.poolDir, name);
  execFileSync('cp', ['--sparse=always', join(testImages(), 'debian-ok.raw'), dst]);
  fill(dst, mib - 64);
}

async function p3() {
  const src = join(W, 'src-1g.img');
  if (!existsSync(src)) fill(src, 1024);
  execFileSync('sha256sum', [src]); // same page-cache state for all three
  const cp: number[] = [], sha: number[] = [], ours: number[] = [];
  let rss = 0;
  for (let i = 0; i < ROUNDS; i++) {
    const dst = join(W, 'dst.img');
    rmSync(dst, { force: true });
    cp.push((await timed('cp', [src, dst])).ms);
    rmSync(dst, { force: true });
    sha.push((await timed('sha256sum', [src])).ms);
    const r = await timed(process.execPath, [join(REPO, 'dist/bench/ingest-one.js'), src, dst]);
    if (r.code !== 0) throw new Error('ingest failed');
    ours.push(r.ms);
    rss = Math.max(rss, JSON.parse(r.out).maxRssKiB);
    rmSync(dst, { force: true });
  }
  const base = Math.max(median(cp), median(sha));
  console.log(`P3 cold ingest of 1 GiB, ${ROUNDS} rounds, medians:`);
  console.log(`  cp ${sec(median(cp))}   sha256sum ${sec(median(sha))}   ingest (copy+sha256+fsync, one pass) ${sec(median(ours))}, peak RSS ${Math.round(rss / 1024)} MB`);
  console.log(`  ratio ${(median(ours) / base).toFixed(2)} of max(cp, sha256sum) (target <= 1.10)`);
}

async function p5() {
  const script = '#!/bin/sh\n#VM img=debian12.qcow2\necho\n';
  const one: number[] = [], eight: number[] = [];
  for (let i = 0; i < Math.min(ROUNDS, 2); i++) {
    const a = new Mom({ privateCache: true });
    const r = await a.prologue({ id: '1.bench', script });
    if (r.code !== 0) throw new Error(r.er);
    one.push(r.ms);
    rmSync(a.root, { recursive: true, force: true });
    const b = new Mom({ privateCache: true });
    const t0 = performance.now();
    const rs = await Promise.all(Array.from({ length: 8 }, (_, j) => b.prologue({ id: `${10 + j}.bench`, script })));
    eight.push(performance.now() - t0);
    if (rs.some((x) => x.code !== 0)) throw new Error('a concurrent prologue failed');
    const ingests = b.logLines().filter((l) => l.msg === 'image ingested').length;
    const verdicts = b.logLines().filter((l) => l.msg === 'verdict stored').length;
    if (ingests !== 1 || verdicts !== 1) throw new Error(`expected one ingest and one verification, saw ${ingests} and ${verdicts}`);
    rmSync(b.root, { recursive: true, force: true });
  }
  console.log(`P5 cold prologue (hash, copy, qemu-img, libguestfs TCG, overlay), ${one.length} rounds, medians:`);
  console.log(`  one ${sec(median(one))}   8 at once ${sec(median(eight))} (one ingest, one verification each time)`);
  console.log(`  ratio ${(median(eight) / median(one)).toFixed(2)} (target <= 1.30)`);
}

/** Runs the prologue and samples its peak RSS (VmHWM) from /proc until it exits. */
async function prologueWithRss(mom: Mom, job: Job): Promise<{ ms: number; hwmKiB: number; code: number | null; er: string }> {
  let hwm = 0;
  let timer: NodeJS.Timeout | undefined;
  const r = await mom.prologue(job, {
    onSpawn: (pid) => {
      timer = setInterval(() => {
        try {
          const m = /VmHWM:\s+([0-9]+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
          if (m) hwm = Math.max(hwm, Number(m[1]));
        } catch {
          /* exited */
        }
      }, 10);
    },
  });
  clearInterval(timer);
  return { ms: r.ms, hwmKiB: hwm, code: r.code, er: r.er };
}

async function p6p7() {
  const mom = new Mom({ privateCache: true });
  guestImage(mom, 'big4.raw', 4096);
  guestImage(mom, 'big2.raw', 2048);
  const chk = await timed(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'big4.raw', 'big2.raw']);
  if (chk.code !== 0) throw new Error('check --image failed:\n' + chk.out);
  if (ONLY.includes('P6')) {
    const r = await prologueWithRss(mom, { id: '1.bench', script: '#!/bin/sh\n#VM img=big4.raw\necho\n' });
    if (r.code !== 0) throw new Error(r.er);
    console.log(`P6 prologue ingesting a 4 GiB image: ${sec(r.ms)}, peak RSS ${(r.hwmKiB / 1024).toFixed(1)} MB (target <= 100 MB)`);
    await mom.run('epilogue', { id: '1.bench' });
  }
  if (ONLY.includes('P7')) {
    const src = join(mom.poolDir, 'big2.raw');
    const stage = join(W, 'stage');
    const staging: number[] = [], cold: number[] = [], warm: number[] = [];
    const tool = existsSync('/usr/bin/rsync') ? 'rsync' : 'cp';
    for (let i = 0; i < Math.min(ROUNDS, 2); i++) {
      rmSync(stage, { recursive: true, force: true });
      mkdirSync(stage, { recursive: true });
      const t0 = performance.now();
      for (let v = 0; v < 4; v++) {
        const r = await timed(`/usr/bin/${tool}`, [src, join(stage, `vm-${v}.img`)]);
        if (r.code !== 0) throw new Error(`${tool} failed`);
      }
      staging.push(performance.now() - t0);
      rmSync(stage, { recursive: true, force: true });
      const script = '#!/bin/sh\n#VM img=big2.raw,vms_per_node=4\necho\n';
      const evict = await timed(process.execPath, [BIN, '--config', mom.configFile, 'cache', 'gc']);
      if (evict.code !== 0) throw new Error('gc failed');
      for (const e of JSON.parse((await timed(process.execPath, [BIN, '--config', mom.configFile, 'cache', 'list', '--json'])).out).images) {
        await timed(process.execPath, [BIN, '--config', mom.configFile, 'cache', 'evict', e.digest]);
      }
      const c = await mom.prologue({ id: `${100 + i}.bench`, script });
      if (c.code !== 0) throw new Error(c.er);
      cold.push(c.ms);
      const w = await mom.prologue({ id: `${200 + i}.bench`, script });
      if (w.code !== 0) throw new Error(w.er);
      warm.push(w.ms);
      await mom.run('epilogue', { id: `${100 + i}.bench` });
      await mom.run('epilogue', { id: `${200 + i}.bench` });
    }
    console.log(`P7 job start, 2 GiB image, 4 VMs, ${staging.length} rounds, medians:`);
    console.log(`  vTorque staging (${tool} per VM) ${sec(median(staging))}   ours, image not cached (copy once + 4 overlays) ${sec(median(cold))}   ours, image cached ${sec(median(warm))}`);
    console.log(`  speed-up ${(median(staging) / median(cold)).toFixed(1)}x cold, ${(median(staging) / median(warm)).toFixed(1)}x cached (expect >= 20x)`);
  }
  rmSync(mom.root, { recursive: true, force: true });
}

async function main() {
  mkdirSync(W, { recursive: true });
  if (ONLY.includes('P3')) await p3();
  if (ONLY.includes('P5')) await p5();
  if (ONLY.includes('P6') || ONLY.includes('P7')) await p6p7();
  rmSync(join(W, 'stage'), { recursive: true, force: true });
}

main().catch((e) => { console.error(e); process.exit(1); });
