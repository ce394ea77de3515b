// One copy-on-write overlay per VM on the cached base: the VM writes only its
// own qcow2, the base stays immutable and shared. For fs_type=ramdisk the base
// is first copied into RAM (ramdisk_dir), so the VMs' reads never touch disk.
import { constants, copyFileSync, lstatSync, mkdirSync, renameSync, rmSync, statfsSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { formatBytes } from '../config/values.js';
import { NodeFault } from '../core/errors.js';
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

function copyToRamdisk(base: CachedBase, dir: string, owner: FileOwner): string {
  const need = lstatSync(base.path).blocks * 512;
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  if (free < need) {
    throw new NodeFault(`the ramdisk has no room for the job's VM disks`, [
      { id: 'ramdisk-full', where: dir, message: `needs ${formatBytes(need)} for the base image; ${formatBytes(free)} free`, fix: 'use fs_type=sharedfs, or give [paths] ramdisk_dir more room' },
    ]);
  }
  const path = `${dir}/base.${base.format}`;
  try {
    copyFileSync(base.path, path);
  } catch (e) {
    rmSync(path, { force: true });
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`cannot copy the base image to the ramdisk (${code})`, [
      { id: 'ramdisk-full', where: dir, message: `copying ${formatBytes(need)} failed: ${code}`, fix: 'use fs_type=sharedfs, or give [paths] ramdisk_dir more room' },
    ]);
  }
  // The VMs only read it; make that so.
  ownFile(path, { ...owner, fileMode: owner.fileMode & 0o444 });
  return path;
}
