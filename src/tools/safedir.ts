// The prologue's only way to make or hand over what it writes as root: the
// small audited helper that doc/admin.md's security model names.
//
// - A working directory ([paths] cache_dir, job_dir, ramdisk_dir) is used
//   only once it and every directory above it are root's alone
//   (src/tools/trust.ts); a missing one is created root-owned. A directory
//   another user made first, or can write, is refused: nothing is created,
//   chowned or removed through it.
// - Inside such a chain no other user can add, rename or swap an entry, so
//   a path there means what root verified. Ownership and modes are still set
//   on an open descriptor (O_NOFOLLOW, fstat, fchown, fchmod): Node has no
//   lchown-free chown by path, and the descriptor is what was checked.
// - Node cannot mkdirat or openat; the steps that name a path (mkdir, rename,
//   rm) do so only inside a verified chain, which is why they are safe here.
import { closeSync, constants, fchmodSync, fchownSync, fstatSync, lstatSync, mkdirSync, openSync, readSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { NodeFault } from '../core/errors.js';
import { modeText, untrustedPath } from './trust.js';

const OPEN_DIR = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const OPEN_FILE = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

export interface Ownership {
  uid: number;
  gid: number;
  mode: number;
}

const unsafe = (what: string, dir: string, why: string) => new NodeFault(`${what} ${dir} is not safe to use as root: ${why}`, [{
  id: 'unsafe-dir', where: dir, message: why,
  fix: `make it and every directory above it root-owned and not writable by group or others (install -d -o root -g root -m 0755 ${dir}); run vtorque-prologue doctor`,
}]);

/** Applies ownership to what fd is open on; the descriptor, never the path. */
function ownFd(fd: number, o: Ownership): void {
  fchownSync(fd, o.uid, o.gid);
  fchmodSync(fd, o.mode);
}

/**
 * Makes sure dir is a root-owned directory that only root can change, making
 * it (and missing parents, 0755) if needed. what names the ini key for the
 * message. Throws a NodeFault ('unsafe-dir') for a chain someone else controls:
 * the admin's configuration, which doctor reports.
 */
export function ensureRootDir(dir: string, mode: number, what: string): void {
  const path = resolve(dir);
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (!st) {
    if (path !== '/') ensureRootDir(dirname(path), 0o755, what);
    try {
      mkdirSync(path, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    // Whoever made it (we, or someone racing us in a sticky parent): the check below decides.
    const fd = openSync(path, OPEN_DIR);
    try {
      if (fstatSync(fd).uid === 0) ownFd(fd, { uid: 0, gid: 0, mode });
    } finally {
      closeSync(fd);
    }
  } else if (!st.isDirectory()) {
    throw unsafe(what, path, st.isSymbolicLink() ? 'it is a symlink' : 'it is not a directory');
  }
  const why = untrustedPath(path);
  if (why) throw unsafe(what, path, why);
}

/**
 * A fresh directory name inside a verified one: whatever an earlier start
 * left there is removed first. Owned root:gid with mode, set on its descriptor.
 */
export function freshDir(parent: string, name: string, o: Omit<Ownership, 'uid'>): string {
  if (!/^[^/]+$/.test(name) || name === '.' || name === '..') throw new Error(`not a plain name: ${JSON.stringify(name)}`);
  const path = `${parent}/${name}`;
  rmSync(path, { recursive: true, force: true });
  mkdirSync(path, { mode: 0o700 });
  ownDir(path, o);
  return path;
}

/** Root-owned directory (made by us in a verified chain) handed to a group, by descriptor. */
export function ownDir(path: string, o: Omit<Ownership, 'uid'>): void {
  const fd = openSync(path, OPEN_DIR);
  try {
    const st = fstatSync(fd);
    if (st.uid !== 0) throw new Error(`${path} is owned by uid ${st.uid}, not root`);
    ownFd(fd, { uid: 0, gid: o.gid, mode: o.mode });
  } finally {
    closeSync(fd);
  }
}

/** Hands a regular file over (owner, group, mode) by descriptor; a symlink, FIFO or device is refused, never followed. */
export function ownFile(path: string, o: Ownership): void {
  const fd = openSync(path, OPEN_FILE);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file (mode ${modeText(st.mode)})`);
    ownFd(fd, o);
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes parent/name, but only when parent is root's alone: root never
 * deletes through a directory another user controls, where a swapped-in
 * symlink could send rm anywhere.
 */
export function removeIn(parent: string, name: string): 'removed' | 'absent' | 'untrusted' {
  try {
    lstatSync(`${parent}/${name}`);
  } catch {
    return 'absent';
  }
  if (untrustedPath(parent)) return 'untrusted';
  rmSync(`${parent}/${name}`, { recursive: true, force: true });
  return 'removed';
}

/**
 * The first maxBytes of a regular file owned by one of `owners`, opened
 * without following a link and without blocking on a FIFO; undefined when it
 * is absent, not a regular file, or someone else's (a hard link to another
 * account's file keeps that account's uid, so it is never read back).
 */
export function readOwnedFile(path: string, owners: readonly number[], maxBytes: number): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, OPEN_FILE);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || !owners.includes(st.uid)) return undefined;
    const buf = Buffer.alloc(Math.min(maxBytes, st.size));
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
