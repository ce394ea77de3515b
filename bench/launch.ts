// bench/launch: how long a #VM job takes to reach its user's first line,
// against booting the same guest with the same seed by hand.
//
// - ours: from the prologue's start (it boots the VMs and waits for their
//   agents) to the first line the job script prints inside VM 0, through the
//   job starter, as pbs_mom runs them; also the starter's own part alone
//   (from its start to that line), which is what a user waits for once
//   Torque has started the job;
// - baseline: a bare qemu-system-x86_64 boot of the same guest (same kernel,
//   initrd, overlay on the same base, same seed medium, same accelerator) to
//   cloud-init's end, seen on the serial console.
// Target: ours / baseline <= 1.1. The boot guest has no bootloader (it is
// built from a file tree), so there is no plain disk boot to compare with.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Mom, lookupUser } from '../test/harness/mom.js';
import { bootGuestImage } from '../test/harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from '../test/harness/seed-user.js';

const ACCEL = process.env.ACCEL ?? 'tcg';
const QEMU = '/usr/bin/qemu-system-x86_64';
const guest = bootGuestImage();
const guestDir = guest.slice(0, guest.lastIndexOf('/'));
ensureSeedUser();
const owner = lookupUser(SEED_USER.name);
const ini = `[launch]\nstart = START\naccel = ${ACCEL}\nboot = 1100\n[timeouts]\ntotal = 1200\n[seed]\nssh_keys_from =\n`;
const script = '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho first line\n';

/** Milliseconds until `needle` appears in the file, polled every 50 ms. */
async function until(file: string, needle: string, t0: number, limitMs: number): Promise<number> {
  for (;;) {
    if (existsSync(file) && readFileSync(file, 'utf8').includes(needle)) return performance.now() - t0;
    if (performance.now() - t0 > limitMs) throw new Error(`${needle} did not appear in ${file} within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function baseline(): Promise<number> {
  // The seed a job gets, made by the prologue with start = false; the overlay fresh on the same base.
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: ini.replace('START', 'false') });
  const job = { id: '1.bench', user: owner, script };
  const p = await mom.prologue(job, { alarm: 1300 });
  if (p.code !== 0) throw new Error(p.er);
  const m = JSON.parse(readFileSync(join(mom.jobDir, job.id, 'manifest.json'), 'utf8'));
  const dir = mkdtempSync(join(tmpdir(), 'vtorque-bench-'));
  const seed = join(dir, 'seed.iso');
  copyFileSync(m.vms[0].seed.path, seed);
  const overlay = join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', m.base.path, overlay]);
  await mom.run('epilogue', job);
  const consoleFile = join(dir, 'console');
  const t0 = performance.now();
  const child = spawn(QEMU, [
    '-machine', `q35,accel=${ACCEL}`, '-smp', '1', '-m', '1024', '-nodefaults', '-no-user-config', '-display', 'none',
    '-kernel', join(guestDir, 'vmlinuz'), '-initrd', join(guestDir, 'initrd.img'), '-append', 'root=/dev/vda ro console=ttyS0 vtorque.facts',
    '-drive', `file=${overlay},if=virtio,format=qcow2`, '-drive', `file=${seed},if=virtio,format=raw,readonly=on`,
    '-nic', `user,model=virtio-net-pci,mac=${m.vms[0].seed.network.mac}`, '-serial', `file:${consoleFile}`,
  ], { stdio: 'ignore' });
  try {
    // The boot guest's facts unit prints this once `cloud-init status --wait` returns.
    return await until(consoleFile, 'VTORQUE-FACT status=', t0, 1_200_000);
  } finally {
    child.kill('SIGKILL');
  }
}

async function ours(): Promise<{ total: number; starter: number; boot: string }> {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: ini.replace('START', 'true') });
  const job = { id: '2.bench', user: owner, script };
  const t0 = performance.now();
  const p = await mom.prologue(job, { alarm: 1300 });
  if (p.code !== 0) throw new Error(p.er);
  const ou = join(mom.torqueHome, 'spool', `${job.id}.OU`);
  const s0 = performance.now();
  const run = mom.startJob(job);
  const total = await until(ou, 'first line', t0, 1_200_000);
  const starter = performance.now() - s0;
  await run;
  await mom.run('epilogue', job);
  return { total, starter, boot: /booted in .*$/m.exec(p.ou)?.[0] ?? '?' };
}

async function main() {
  const b = await baseline();
  const o = await ours();
  console.log(`launch: accelerator ${ACCEL}, 1 VM of the boot guest (1 vCPU, 1 GiB), iso seed`);
  console.log(`  baseline: bare qemu boot to cloud-init's end          ${(b / 1000).toFixed(1)} s`);
  console.log(`  ours: prologue start to the script's first line      ${(o.total / 1000).toFixed(1)} s (VM ${o.boot})`);
  console.log(`  ours: job starter start to the script's first line   ${(o.starter / 1000).toFixed(2)} s`);
  console.log(`  ratio ${(o.total / b).toFixed(2)} (target <= 1.10)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
