// Nothing half-written is ever visible: write a temporary name, fsync, rename,
// fsync the directory. A prologue killed at any point leaves either the old
// file or the new one, plus at worst a stray ".tmp-" file that sweeps remove.
import { closeSync, constants, fchmodSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';

export function tmpNameFor(path: string): string {
  return `${dirname(path)}/.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

function fsyncOpened(path: string, flags: number): void {
  const fd = openSync(path, constants.O_RDONLY | flags);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export const fsyncDir = (dir: string): void => fsyncOpened(dir, constants.O_DIRECTORY);

/** Makes a file another tool wrote durable before it is renamed into place. */
export const fsyncFile = (path: string): void => fsyncOpened(path, constants.O_NOFOLLOW);

export function writeFileAtomic(path: string, data: string | Buffer, mode: number): void {
  const tmp = tmpNameFor(path);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off);
      fchmodSync(fd, mode); // pbs_mom's umask 0077 would otherwise decide
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    throw e;
  }
  fsyncDir(dirname(path));
}
