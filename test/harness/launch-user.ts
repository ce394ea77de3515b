// The launch account qemu runs as ([launch] user and group, and by default
// [jobfiles] owner and group): a system account with no home and no shell, as
// install.sh creates it.
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, lookupUser, type User } from './mom.js';

export const LAUNCH_NAME = 'vtorque-launch';

// Test files run in parallel: another may create it first (exit 9, "exists").
function add(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 9) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
}

let known: User | undefined;

/** Creates the account and its group if missing; returns it. */
export function ensureLaunchUser(): User {
  if (known) return known;
  if (spawnSync('getent', ['group', LAUNCH_NAME]).status !== 0) add('groupadd', ['--system', LAUNCH_NAME]);
  if (spawnSync('getent', ['passwd', LAUNCH_NAME]).status !== 0) {
    add('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '--home-dir', '/nonexistent', '-g', LAUNCH_NAME, LAUNCH_NAME]);
  }
  known = lookupUser(LAUNCH_NAME);
  return known;
}

/** The bootable Debian guest of scripts/build-boot-guest (built once, cached by the script's hash): its qcow2. */
export function bootGuestImage(): string {
  const out = execFileSync(join(REPO, 'scripts/build-boot-guest'), [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 900_000 });
  return join(out.trim().split('\n').pop()!, 'guest.qcow2');
}

/**
 * An ini for nodes that really boot their VMs: TCG (a nested /dev/kvm hangs
 * guests here) and time boxes for slow boots. total keeps 600 s for a cold
 * image's work (its check, copy and boot files) before [launch] boot, which
 * the prologue leaves whole or refuses to start the boot (boot-time).
 */
export const bootingIni = (boot = 900) => `[launch]\nstart = true\naccel = tcg\nboot = ${boot}\n[timeouts]\ntotal = ${bootingTotal(boot)}\n[seed]\nssh_keys_from =\n`;

/** bootingIni's [timeouts] total; a harness $prologalarm must be above it (pbs_mom's is total + 20 s at least). */
export const bootingTotal = (boot = 900) => Math.max(1200, boot + 600);

/** Live qemus of a job's VMs, by the name the launcher gives them (qemu -name vtorque-<jobid>-vm<n>). */
export function qemusOf(jobId: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').some((a) => a.startsWith(`vtorque-${jobId}-vm`))) out.push(Number(p));
    } catch { /* gone */ }
  }
  return out;
}

/**
 * A VM's disk as the prologue leaves it for qemu: <jobDir>/vm-0/disk.qcow2, a
 * qcow2 overlay on the boot guest, in a 0700 directory, both the launch
 * account's. Returns the overlay's path.
 */
export function bootGuestOverlay(jobDir: string, guest: string, account: { uid: number; gid: number }): string {
  const vmDir = join(jobDir, 'vm-0');
  mkdirSync(vmDir, { mode: 0o700 });
  const overlay = join(vmDir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', guest, '-F', 'qcow2', overlay]);
  chownSync(vmDir, account.uid, account.gid);
  chownSync(overlay, account.uid, account.gid);
  return overlay;
}
