// One answer to "could anyone but root change what root finds at this path?",
// for the prologue's working directories and for doctor's checks of the
// program, node and the ini. A path is trusted when it and every directory
// above it are root-owned and writable by nobody else. A world-writable
// directory with the sticky bit (/tmp, /dev/shm) is passed over only when the
// entry below it is root's: the sticky bit stops others from renaming or
// removing it, so what root verified stays put.
//
// Why a path walk is enough here: once a directory is root-owned and not
// writable by others, no other user can change which entries it holds, so a
// verified chain cannot be swapped under us afterwards. Everything the
// prologue creates as root lives inside such a chain (src/tools/safedir.ts).
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { dirname, resolve } from 'node:path';

export const modeText = (m: number): string => (m & 0o7777).toString(8).padStart(4, '0');

/** Why st (a directory or file at p) is not root's alone, or undefined. below: the entry under it, for the sticky rule. */
export function untrustedEntry(p: string, st: Stats, below?: Stats): string | undefined {
  if (st.isSymbolicLink()) return `${p} is a symlink`;
  if (st.uid !== 0) return `${p} is owned by uid ${st.uid}, not root`;
  const sticky = st.isDirectory() && (st.mode & 0o1000) !== 0 && below !== undefined && below.uid === 0;
  if (st.mode & 0o022 && !sticky) {
    const who = (st.mode & 0o022) === 0o022 ? 'group and others' : st.mode & 0o020 ? 'group' : 'others';
    return `${p} has mode ${modeText(st.mode)}, writable by ${who}`;
  }
  return undefined;
}

/**
 * Why the path (which must exist) could be changed by someone other than root:
 * the first entry, from the path itself up to /, that is a symlink, not
 * root-owned, or writable by group or others. undefined: trusted.
 */
export function untrustedPath(path: string): string | undefined {
  let p = resolve(path);
  let below: Stats | undefined;
  for (;;) {
    const st = lstatSync(p);
    const why = untrustedEntry(p, st, below);
    if (why) return why;
    if (p === '/') return undefined;
    if (below === undefined && !st.isDirectory() && !st.isFile()) return `${p} is not a regular file or directory`;
    below = st;
    p = dirname(p);
  }
}

/**
 * A directory that another user could create first whenever it is missing:
 * one with a world-writable ancestor (sticky or not), e.g. /dev/shm/vtorque,
 * which a reboot removes and any user may then make. undefined when only root
 * can create it and everything above it.
 */
export function squattable(path: string): string | undefined {
  for (let p = dirname(resolve(path)); ; p = dirname(p)) {
    try {
      const st = lstatSync(p);
      if (st.isDirectory() && st.mode & 0o002) return `${p} is writable by every user (mode ${modeText(st.mode)})`;
    } catch {
      /* not there (yet): whoever makes it is judged by its parent */
    }
    if (p === '/') return undefined;
  }
}

/**
 * untrustedPath for a path named in a config or a wrapper, which may pass
 * through symlinks (/usr/bin/node -> /etc/alternatives/node -> ...): resolved
 * one name at a time as the kernel does, every directory looked in must be
 * root's alone (or sticky, with a root-owned entry), every symlink met must be
 * root's, and what the path finally names must be trusted. Whoever could
 * change any of these could change what root runs or reads.
 */
export function untrustedResolved(path: string): string | undefined {
  // Not resolve(): it would fold a '..' after a symlink lexically, where the kernel goes up from the link's target.
  const todo = (path.startsWith('/') ? path : resolve(path)).split('/').filter((c) => c !== '');
  let cur = '/';
  let curSt = lstatSync('/');
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    if (name === '.') continue;
    if (name === '..') {
      cur = dirname(cur);
      curSt = lstatSync(cur);
      continue;
    }
    const next = cur === '/' ? `/${name}` : `${cur}/${name}`;
    const st = lstatSync(next);
    const why = untrustedEntry(cur, curSt, st);
    if (why) return why;
    if (st.isSymbolicLink()) {
      if (st.uid !== 0) return `${next} is a symlink owned by uid ${st.uid}, not root`;
      if (++links > 40) return `${path} passes through more than 40 symlinks`;
      const target = readlinkSync(next);
      todo.unshift(...target.split('/').filter((c) => c !== ''));
      if (target.startsWith('/')) {
        cur = '/';
        curSt = lstatSync('/');
      }
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) return `${next} is not a directory`;
    cur = next;
    curSt = st;
  }
  return untrustedEntry(cur, curSt);
}
