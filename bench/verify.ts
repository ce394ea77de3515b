// bench/verify: (1) a cold verification of an image never seen before,
// against one bare `guestfish --ro -a IMG -i exit` launch in the same run
// (target <= 1.2); (2) a warm VM job (verdict cached, stat unchanged) against
// the non-VM job through the same harness (target <= +50 ms).
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, testImages } from '../test/harness/mom.js';

const ROUNDS = Number(process.env.ROUNDS ?? 2);
const WARM_RUNS = Number(process.env.RUNS ?? 30);
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = Math.floor(s.length / 2); return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };

function timed(cmd: string, args: string[], env: Record<string, string>): Promise<{ ms: number; code: number | null }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio: 'ignore', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', ...env } });
    c.on('exit', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code }));
  });
}

async function main() {
  const img = join(testImages(), 'debian-ok.qcow2');
  const tcg = { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };
  const bare: number[] = [];
  const ours: number[] = [];
  for (let i = 0; i < ROUNDS; i++) { // ROUNDS=0 skips the cold part
    const b = await timed('/usr/bin/guestfish', ['--ro', '--format=qcow2', '-a', img, '-i', 'exit'], tcg);
    if (b.code !== 0) throw new Error('bare guestfish failed');
    bare.push(b.ms);
    const mom = new Mom({ privateCache: true }); // a node that has never seen the image: hash, qemu-img, libguestfs
    const o = await timed(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'debian12.qcow2'], {});
    if (o.code !== 0) throw new Error('check --image failed');
    ours.push(o.ms);
    rmSync(mom.root, { recursive: true, force: true });
  }
  if (ROUNDS > 0) console.log(`verify (cold), ${ROUNDS} rounds alternating, TCG:`);
  if (ROUNDS > 0) {
  console.log(`  guestfish --ro -a IMG -i exit   median ${(median(bare) / 1000).toFixed(1)} s`);
  console.log(`  check --image (hash, qemu-img info+check, one appliance with every fact)   median ${(median(ours) / 1000).toFixed(1)} s`);
  console.log(`  ratio ${(median(ours) / median(bare)).toFixed(2)} (target <= 1.20)`);
  }

  const mom = new Mom();
  const vmJob = { id: '1.warm', script: '#!/bin/sh\n#VM img=debian12.qcow2,vcpus=2\necho\n' };
  const plain = { id: '2.warm', script: '#!/bin/sh\necho\n' };
  mom.submit(vmJob);
  mom.submit(plain);
  const first = await mom.run('prologue', vmJob);
  if (first.code !== 0) throw new Error(first.er);
  const vm: number[] = [];
  const np: number[] = [];
  for (let i = 0; i < WARM_RUNS; i++) {
    np.push((await mom.run('prologue', plain)).ms);
    const r = await mom.run('prologue', vmJob);
    if (r.code !== 0) throw new Error(r.er);
    vm.push(r.ms);
  }
  console.log(`verify (warm), ${WARM_RUNS} runs each, alternating:`);
  console.log(`  non-VM job    median ${median(np).toFixed(1)} ms`);
  console.log(`  VM job, verdict cached, stat unchanged   median ${median(vm).toFixed(1)} ms`);
  console.log(`  difference ${(median(vm) - median(np)).toFixed(1)} ms (target <= 50 ms)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
