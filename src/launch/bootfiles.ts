// The kernel, initrd and root file system a VM of a cached base boots with
// directly: images without a bootloader (debootstrap builds, the test guest)
// boot only this way, and the rest boot faster. They are not looked for here:
// the appliance that verifies the image reads them (image/guestfs.ts,
// BootFacts in the verdict) and takes the files out into
// <cache_dir>/kernels/<digest>/ (image/verdicts.ts keepBootFiles), one launch
// per cold image. This file hands them out: to the launch account, and for a
// user's private image (base root 0400) to the launch group alone (0440
// base, 0750 kernels directory), since qemu reads both.
//
// No guestfish runs here: a verdict without its files is made again with the
// copy (cache/acquire.ts), so an appliance that does not finish is the
// verification's (a node fault naming guestfish, no VM). What is left here is
// an appliance that finished but could not read them whole: the image's.
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, openSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { kernelsPath, layoutOf } from '../cache/layout.js';
import { JobFault, NodeFault } from '../core/errors.js';
import { SAFE_PATH } from '../image/guestfs.js';
import { LOADER_FILES } from '../image/rules.js';
import { storedBootFiles, type Verdict } from '../image/verdicts.js';

export interface BootFiles {
  /** Absent: boot from the disk's own bootloader. */
  kernel?: string;
  initrd?: string;
  /** root= for the kernel command line: UUID=... or a device-mapper path. */
  root?: string;
  /** What the guest held, for the log. */
  source: string;
}

export interface BaseRef { path: string; digest: string; format: string }

/**
 * Lets the launch group read a private base (a user's image: root 0400, not
 * readable by others), by descriptor: root:gid 0440. Returns that gid for
 * bootFiles, or undefined for a public base, which stays as it is.
 */
export function grantLaunchRead(basePath: string, gid: number): number | undefined {
  const fd = openSync(basePath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== 0) throw new Error(`${basePath} is not a regular file of root's`);
    if ((st.mode & 0o004) !== 0) return undefined;
    if (st.gid !== gid) fchownSync(fd, 0, gid);
    if ((st.mode & 0o777) !== 0o440) fchmodSync(fd, 0o440);
    return gid;
  } finally {
    closeSync(fd);
  }
}

/**
 * What a VM of the base boots with, as its verdict says. privateTo: the base
 * is private and only this group (the launch group) may read its kernels.
 * name: the image's name for the job, in messages.
 */
export function bootFiles(config: Config, base: BaseRef, verdict: Verdict, o: { name: string; privateTo?: number }): BootFiles {
  const b = verdict.facts.boot;
  const loaders = LOADER_FILES.filter((p) => verdict.facts.exists[p]);
  const loader = loaders.length > 0 ? `its bootloader (${loaders.join(', ')}) boots it` : 'nothing boots it ([requirements] bootable is not error)';
  if (!b) return { source: `no boot facts; ${loader}` };
  if (!b.kernel || !b.root) return { source: `${b.kernel ? `root file system ${b.rootDevice} has no UUID` : 'no kernel to boot directly'}; ${loader}` };
  const kernel = b.kernel;
  const stored = storedBootFiles(config, base.digest, kernel);
  if (stored) {
    grant(stored.dir, o.privateTo);
    return { kernel: stored.vmlinuz, initrd: stored.initrd, root: b.root, source: `${kernel.vmlinuz} and ${kernel.initrd}` };
  }
  if (!SAFE_PATH.test(`${kernelsPath(layoutOf(config), base.digest)}/.tmp-${base.digest}-${process.pid}-00000000`)) {
    throw new NodeFault('the cache directory\'s path cannot be given to guestfish', [{
      id: 'cache-dir', where: `[paths] cache_dir (${config.paths.cache_dir})`, message: 'has characters guestfish splits words on (blanks, quotes), so no kernel can be taken out into it', fix: 'use a cache_dir of letters, digits and . _ / + - only',
    }]);
  }
  // The appliance that verified the copy finished, but the files did not come whole: the image's own content.
  const unread = `${kernel.vmlinuz} and ${kernel.initrd} could not be read whole from the image`;
  if (loaders.length > 0) return { source: `${unread}; ${loader}` };
  throw new JobFault(`image ${o.name} cannot be booted`, [{
    id: 'bootable', where: `image ${o.name}`, message: `fails bootable: ${unread}, and it has no BIOS bootloader`,
    fix: 'check the image\'s file system (e2fsck) and reinstall its kernel, or install GRUB for BIOS boot',
  }]);
}

/** The launch account reads them: root:gid 0750 for a private base, 0755 for a public one (a user's image that is now also in the pool). */
function grant(dir: string, privateTo: number | undefined): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (st.uid !== 0) throw new Error(`${dir} is not root's`);
    if (privateTo === undefined) {
      if ((st.mode & 0o777) !== 0o755) fchmodSync(fd, 0o755);
      return;
    }
    if (st.gid !== privateTo) fchownSync(fd, 0, privateTo);
    if ((st.mode & 0o777) !== 0o750) fchmodSync(fd, 0o750);
  } finally {
    closeSync(fd);
  }
}
