// bench/warm: a VM job with 4 VMs whose image is already cached and verified,
// through the pbs_mom harness, against the bare tools it must run, in the
// same run, alternating: `node -e 0`, then 4 x `qemu-img create` of an overlay
// and 4 x seed media creation (genisoimage of a meta-data, user-data and
// network-config of the size ours have). Target: at most 1.3x the baseline.
// The prologue writes seeds only once src/seed is wired into
// src/pipeline/prologue.ts; until then this says so and measures without them.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mom } from '../test/harness/mom.js';

const RUNS = Number(process.env.RUNS ?? 15);
const VMS = 4;
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = Math.floor(s.length / 2); return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' } });
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`))));
  });
}

async function baseline(base: string, format: string, scratch: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  await run(process.execPath, ['-e', '0']);
  for (let i = 0; i < VMS; i++) {
    rmSync(join(scratch, `d${i}.qcow2`), { force: true });
    await run('/usr/bin/qemu-img', ['create', '-q', '-f', 'qcow2', '-F', format, '-b', base, join(scratch, `d${i}.qcow2`)]);
  }
  for (let i = 0; i < VMS; i++) {
    const s = join(scratch, 'seed');
    await run('/usr/bin/genisoimage', ['-quiet', '-output', join(scratch, `s${i}.iso`), '-volid', 'cidata', '-joliet', '-rock', '-input-charset', 'utf-8', '-graft-points',
      `meta-data=${s}/meta-data`, `user-data=${s}/user-data`, `network-config=${s}/network-config`]);
  }
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main() {
  const mom = new Mom({ ini: '[seed]\nmedia = iso\n' });
  const job = { id: '1.warm', script: `#!/bin/sh\n#VM img=debian12.qcow2,vms_per_node=${VMS}\necho\n` };
  mom.submit(job);
  const first = await mom.run('prologue', job);
  if (first.code !== 0) throw new Error(`first run failed: ${first.ou}${first.er}`);
  const manifest = JSON.parse(readFileSync(join(mom.jobDir, job.id, 'manifest.json'), 'utf8')) as { base: { path: string; format: string }; vms: Record<string, unknown>[] };
  const seeded = manifest.vms.filter((v) => Object.keys(v).some((k) => /seed/i.test(k))).length;

  const scratch = mkdtempSync(join(tmpdir(), 'vtorque-warm-'));
  const seedDir = join(scratch, 'seed');
  await run('/bin/mkdir', [seedDir]);
  writeFileSync(join(seedDir, 'meta-data'), 'instance-id: iid-1.warm-vm0-0123abcd\nlocal-hostname: vnode01-0\n');
  writeFileSync(join(seedDir, 'user-data'), `#cloud-config\n${'x: y\n'.repeat(60)}`);
  writeFileSync(join(seedDir, 'network-config'), 'version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: 02:00:00:00:00:01\n    set-name: eth0\n    dhcp4: true\n');

  const base: number[] = [];
  const pro: number[] = [];
  for (let i = 0; i < 2; i++) { await baseline(manifest.base.path, manifest.base.format, scratch); await mom.run('prologue', job); }
  for (let i = 0; i < RUNS; i++) {
    base.push(await baseline(manifest.base.path, manifest.base.format, scratch));
    const r = await mom.run('prologue', job);
    if (r.code !== 0) throw new Error(r.er);
    pro.push(r.ms);
  }
  rmSync(scratch, { recursive: true, force: true });
  const b = median(base);
  const p = median(pro);
  console.log(`warm: a ${VMS}-VM job, image cached and verified, ${RUNS} runs each, alternating`);
  console.log(`  baseline: node -e 0, ${VMS} x qemu-img create, ${VMS} x genisoimage   median ${b.toFixed(1)} ms`);
  console.log(`  prologue through mom_priv/prologue                              median ${p.toFixed(1)} ms`);
  console.log(`  ratio ${(p / b).toFixed(2)} (target <= 1.30)`);
  if (seeded < manifest.vms.length) {
    console.log(`  NOTE: manifest.json names a seed for ${seeded} of ${manifest.vms.length} VMs: the prologue does not write seeds yet (src/seed is not wired into src/pipeline/prologue.ts), so this run measured it without them`);
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
