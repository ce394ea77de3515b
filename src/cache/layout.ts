// Where the cache keeps what, in one place. Under [paths] cache_dir:
//   images/<sha256>.<fmt>     immutable base images, root-owned, 0444
//   images/<sha256>.json      what we know of each: size, format, pool names (optional; the base is the truth)
//   verdicts/, statmemo/      from image verification
//   kernels/<sha256>/         a base's kernel and initrd for direct boot, taken out by the appliance that verifies it (src/image/verdicts.ts); goes with the base
//   leases/<jobid>.json       the digests a job's VMs use; eviction never takes them
//   locks/                    proper-lockfile locks, one per digest or source
//   tmp/                      ingests in progress; swept when their process is gone
//   quarantine/               bases `cache verify` found corrupt, kept for the admin to look at
//   ended/<jobid>.json        the epilogue's marker: the job ended while its prologue ran (src/pipeline/ended.ts)
//   admission/<jobid>.json    what a running prologue reserved of this node's memory, vCPUs and ramdisk (src/launch/admission.ts)
//   kvm-probe-<hash>.json     the KVM probe's answer for the VMs' and libguestfs's qemu options, per kernel and qemu
//   kvm-probe-vmlinuz         the node's kernel for that probe, when /boot keeps it root's alone
// Per job, under [paths] job_dir/<jobid>/ (and ramdisk_dir/<jobid>/ for fs_type=ramdisk).
import { chmodSync, lstatSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { NodeFault, isVtorqueError } from '../core/errors.js';
import { ensureRootDir } from '../tools/safedir.js';

export interface CacheLayout {
  root: string;
  images: string;
  kernels: string;
  leases: string;
  locks: string;
  tmp: string;
  verdicts: string;
  statmemo: string;
  quarantine: string;
  ended: string;
}

export const layoutOf = (config: Config): CacheLayout => {
  const root = config.paths.cache_dir;
  return {
    root, images: `${root}/images`, kernels: `${root}/kernels`, leases: `${root}/leases`, locks: `${root}/locks`, tmp: `${root}/tmp`,
    verdicts: `${root}/verdicts`, statmemo: `${root}/statmemo`, quarantine: `${root}/quarantine`, ended: `${root}/ended`,
  };
};

export const basePath = (l: CacheLayout, digest: string, format: string) => `${l.images}/${digest}.${format}`;
export const metaPath = (l: CacheLayout, digest: string) => `${l.images}/${digest}.json`;
export const kernelsPath = (l: CacheLayout, digest: string) => `${l.kernels}/${digest}`;
export const leasePath = (l: CacheLayout, jobId: string) => `${l.leases}/${jobId}.json`;
export const endedMarkerPath = (l: CacheLayout, jobId: string) => `${l.ended}/${jobId}.json`;
/** A verdict file; its name (digest, checker version, policy) is the verdict store's to choose. */
export const verdictPath = (l: CacheLayout, name: string) => `${l.verdicts}/${name}.json`;
export const statMemoPath = (l: CacheLayout, key: string) => `${l.statmemo}/${key}.json`;
/** The KVM probe's answer for one set of qemu options (src/launch/kvm.ts), keyed by a hash of them. */
export const kvmProbeMemoPath = (l: CacheLayout, key: string) => `${l.root}/kvm-probe-${key}.json`;
/** The node's kernel, copied for the probe where /boot keeps it root's alone. */
export const kvmProbeKernelPath = (l: CacheLayout) => `${l.root}/kvm-probe-vmlinuz`;

export const DIGEST = /^[0-9a-f]{64}$/;
/** images/<digest>.<fmt>: the only names that count as cached bases. */
export const BASE_NAME = /^([0-9a-f]{64})\.(qcow2|raw|vmdk)$/;

export function ensureLayout(l: CacheLayout): void {
  try {
    // The root and everything above it must be root's alone; below it only root creates anything.
    ensureRootDir(l.root, 0o755, '[paths] cache_dir');
    // Another path may have made it first under pbs_mom's umask 0077 (a verdict
    // or stat memo written by check --image): the launch account must still
    // reach the bases below it.
    chmodSync(l.root, 0o755);
    // Bases must be readable by whatever launches the VMs; locks and tmp are ours alone.
    // verdicts/ and statmemo/ are listable so that a user's check --job reads the
    // node's answer for a pool image (image/verdicts.ts says why that is safe);
    // a node whose umask 0077 made them 0700 is mended here.
    for (const [dir, mode] of [[l.images, 0o755], [l.leases, 0o755], [l.locks, 0o700], [l.tmp, 0o700], [l.verdicts, 0o755], [l.statmemo, 0o755]] as const) {
      try {
        mkdirSync(dir, { mode });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !lstatSync(dir).isDirectory()) throw e;
      }
      chmodSync(dir, mode); // pbs_mom's umask 0077 would leave the bases unreadable to a non-root launcher
    }
  } catch (e) {
    if (isVtorqueError(e)) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`cannot create the image cache in ${l.root} (${code})`, [
      { id: 'cache-dir', where: l.root, message: `cannot be created: ${code}`, fix: 'check [paths] cache_dir: it must be a local directory root can write' },
    ], { cause: e });
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** writeFileAtomic's ".name.tmp-<pid>-<hex>" files left by a killed process: never read, but never left either. */
export function sweepStrays(dir: string): string[] {
  const swept: string[] = [];
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return swept;
  }
  for (const n of names) {
    const m = /^\..+\.tmp-([0-9]+)-[0-9a-f]{8}$/.exec(n);
    if (!m || processAlive(Number(m[1]))) continue;
    try {
      unlinkSync(`${dir}/${n}`);
      swept.push(n);
    } catch {
      /* gone */
    }
  }
  return swept;
}
