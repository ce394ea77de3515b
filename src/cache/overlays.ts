// One copy-on-write overlay per VM on the cached base: the VM writes only its
// own qcow2, the base stays immutable and shared. For fs_type=ramdisk the base
// is first copied into RAM (ramdisk_dir), so the VMs' reads never touch disk.
import { constants, copyFileSync, lstatSync, mkdirSync, renameSync, rmSync, statfsSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatBytes } from '../config/values.js';
import { JobFault, NodeBusy, NodeFault } from '../core/errors.js';
import { runTool } from '../tools/run.js';
import type { CachedBase } from './acquire.js';
import { ownDir, ownFile, type FileOwner, type JobDirs } from './jobdir.js';

export interface Overlay {
  index: number;
  path: string;
  /** The backing file the overlay names (absolute). */
  backing: string;
}

export interface OverlayOptions {
  config: Config;
  base: CachedBase;
  dirs: JobDirs;
  owner: FileOwner;
  signal?: AbortSignal;
}

/** The file the overlays are backed by: the cached base, or its copy in the job's ramdisk directory. */
export function backingFor(o: Pick<OverlayOptions, 'base' | 'dirs' | 'owner'>): string {
  return o.dirs.ramdisk ? copyToRamdisk(o.base, o.dirs.ramdisk, o.owner) : o.base.path;
}

/**
 * Makes the job's overlays, one call per VM. qemu-img creates the first; the
 * others are copies of it. A qcow2 overlay holds no identity of its own, and
 * the backing path is absolute, so the overlays of one job are the same bytes
 * (test/cache-unit checks that against qemu-img): each further VM then costs
 * a 200 KB copy instead of a qemu-img start, ~15 ms of CPU.
 */
export function overlayMaker(o: OverlayOptions, backing: string): (index: number) => Promise<Overlay> {
  let first: Promise<Overlay> | undefined;
  return async (index) => {
    if (!first) {
      first = createOverlay(o, backing, index);
      return first;
    }
    const model = await first;
    return placeOverlay(o, index, backing, (tmp) => copyFileSync(model.path, tmp, constants.COPYFILE_FICLONE));
  };
}

/** One VM's overlay in <home>/vm-<index>/disk.qcow2, made by qemu-img under a temporary name. */
export function createOverlay(o: OverlayOptions, backing: string, index: number): Promise<Overlay> {
  // -F names the base's format so qemu never probes it; the absolute backing path keeps the overlay valid wherever it is opened from.
  return placeOverlay(o, index, backing, (tmp) => runTool(o.config.tools.qemu_img, ['create', '-q', '-f', 'qcow2', '-F', o.base.format, '-b', backing, tmp], {
    timeout: o.config.timeouts.tool * 1000, toolKey: 'qemu_img', signal: o.signal, stdout: 'ignore',
  }));
}

async function placeOverlay(o: OverlayOptions, index: number, backing: string, make: (tmp: string) => unknown): Promise<Overlay> {
  const home = o.dirs.ramdisk ?? o.dirs.dir;
  const dir = `${home}/vm-${index}`;
  mkdirSync(dir, { mode: 0o700 });
  ownDir(dir, o.owner);
  const path = `${dir}/disk.qcow2`;
  const tmp = `${dir}/.disk.qcow2.tmp`;
  await make(tmp);
  ownFile(tmp, o.owner);
  renameSync(tmp, path);
  return { index, path, backing };
}

// Admission (launch/admission.ts) has judged the job's share of the ramdisk
// already; what is left here is the room at this moment. A copy that could
// never fit the ramdisk is the job's to change (its image or fs_type); one
// that does not fit beside what other jobs and programs keep in RAM now waits
// in the queue. Neither says anything about the node's health.
function copyToRamdisk(base: CachedBase, dir: string, owner: FileOwner): string {
  const need = lstatSync(base.path).blocks * 512;
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  const size = fs.blocks * fs.bsize;
  if (need > size) {
    throw new JobFault(`the image does not fit this node's ramdisk`, [
      { id: 'ramdisk-size', where: 'fs_type=ramdisk', message: `its base copy needs ${formatBytes(need)}; the ramdisk holds ${formatBytes(size)} in all`, fix: 'use a smaller image, or fs_type=sharedfs' },
    ]);
  }
  if (free < need) throw ramdiskBusy(dir, need, free);
  const path = `${dir}/base.${base.format}`;
  try {
    copyFileSync(base.path, path);
  } catch (e) {
    rmSync(path, { force: true });
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    if (code === 'ENOSPC') throw ramdiskBusy(dir, need, free, e);
    throw new NodeFault(`cannot copy the base image to the ramdisk (${code})`, [
      { id: 'ramdisk-copy', where: dir, message: `copying ${formatBytes(need)} failed: ${code}`, fix: 'check [paths] ramdisk_dir (a tmpfs root can write) and run vtorque-prologue doctor' },
    ], { cause: e });
  }
  // The VMs only read it; make that so.
  ownFile(path, { ...owner, fileMode: owner.fileMode & 0o444 });
  return path;
}

const ramdiskBusy = (dir: string, need: number, free: number, cause?: unknown) => new NodeBusy(`the ramdisk has no room for the job's VM disks now`, [
  { id: 'ramdisk-busy', where: 'fs_type=ramdisk', message: `its base copy needs ${formatBytes(need)}; ${formatBytes(free)} of ${dir.slice(0, dir.lastIndexOf('/'))} is free now`, fix: 'none needed: the job starts when a node has room' },
], { cause });
