// Copy and hash in one streaming pass. Three rotating buffers keep a read and a
// write in flight while the main thread hashes, so the copy costs about
// max(read, hash, write) rather than their sum, in constant memory. All-zero
// 64 KiB blocks are not written, so a sparse raw image stays about as sparse
// in the cache as in the pool, and eviction's size estimate holds. Where the
// filesystem can clone (btrfs, XFS), the clone is made first and then hashed:
// one read, no data written. The source is read from one descriptor, checked
// to be the authorised file, and must not change while it is read: what was
// hashed is exactly what was copied.
import { createHash } from 'node:crypto';
import { constants, copyFileSync, fstatSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export interface CopyProgress {
  bytes: number;
  total: number;
  ms: number;
}

export interface CopyOptions {
  /** The source must still be this file (authorised by dev/ino); a swap is caught here. */
  expect?: { dev: number; ino: number };
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
  progressEveryMs?: number;
  /** Try a reflink clone first (default true). */
  clone?: boolean;
  /** dst already exists as an empty placeholder (a space reservation) and is overwritten. */
  reserved?: boolean;
  /** What messages call a source given as a descriptor. */
  name?: string;
}

export interface CopyResult {
  digest: string;
  bytes: number;
  ms: number;
  cloned: boolean;
}

const CHUNK = 4 * 1024 * 1024;
const BLOCK = 64 * 1024;
const ZERO = Buffer.alloc(BLOCK);

/** Writes the non-zero blocks of chunk at pos, as few runs as possible. */
function writeRuns(to: FileHandle, chunk: Buffer, pos: number): Promise<unknown> {
  const writes: Promise<unknown>[] = [];
  let start = -1;
  const flush = (end: number) => {
    if (start >= 0) writes.push(to.write(chunk, start, end - start, pos + start));
    start = -1;
  };
  for (let off = 0; off < chunk.length; off += BLOCK) {
    const end = Math.min(off + BLOCK, chunk.length);
    if (chunk.subarray(off, end).equals(ZERO.subarray(0, end - off))) flush(off);
    else if (start < 0) start = off;
  }
  flush(chunk.length);
  return Promise.all(writes);
}

export class SourceChanged extends Error {}

/** Reading the source failed (EIO, a vanished network file): the source's problem, not the cache's. */
export class SourceUnreadable extends Error {
  readonly code: string | undefined;
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.code = (options.cause as NodeJS.ErrnoException).code;
  }
}

/**
 * Copies src (a path, or a descriptor the caller opened and keeps) to dst
 * (which must not exist) and returns the sha256 of what dst holds. dst is
 * fsynced, not renamed.
 */
export async function copyAndHash(src: string | FileHandle, dst: string, o: CopyOptions = {}): Promise<CopyResult> {
  const t0 = performance.now();
  const input = typeof src === 'string' ? await open(src, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK) : src;
  const name = typeof src === 'string' ? src : o.name ?? 'the source';
  try {
    const st = fstatSync(input.fd);
    if (o.expect && (st.dev !== o.expect.dev || st.ino !== o.expect.ino)) throw new SourceChanged(`${name} was replaced after it was checked`);
    if (!st.isFile()) throw new SourceChanged(`${name} is no longer a regular file`);
    // The clone goes through the descriptor's own /proc link: the same inode, whatever the path now names.
    if (o.clone !== false && tryClone(`/proc/self/fd/${input.fd}`, dst, !o.reserved)) {
      const out = await open(dst, constants.O_RDWR | constants.O_NOFOLLOW);
      try {
        const { digest, bytes } = await stream(out, undefined, st.size, t0, o);
        await out.sync();
        assertUnchanged(st, fstatSync(input.fd), name);
        return { digest, bytes, ms: performance.now() - t0, cloned: true };
      } finally {
        await out.close();
      }
    }
    const out = await open(dst, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (o.reserved ? constants.O_TRUNC : constants.O_EXCL), 0o600);
    try {
      const { digest, bytes } = await stream(input, out, st.size, t0, o);
      assertUnchanged(st, fstatSync(input.fd), name);
      await out.truncate(bytes); // skipped zero chunks at the end still count
      await out.sync();
      return { digest, bytes, ms: performance.now() - t0, cloned: false };
    } finally {
      await out.close();
    }
  } finally {
    if (typeof src === 'string') await input.close();
  }
}

/** A write into the source while it was read shows in its size or times. */
function assertUnchanged(before: Stats, after: Stats, name: string): void {
  if (after.size !== before.size || after.mtimeMs !== before.mtimeMs || after.ctimeMs !== before.ctimeMs) {
    throw new SourceChanged(`${name} changed while it was copied (size ${before.size} -> ${after.size})`);
  }
}

function tryClone(src: string, dst: string, exclusive: boolean): boolean {
  try {
    copyFileSync(src, dst, (exclusive ? constants.COPYFILE_EXCL : 0) | constants.COPYFILE_FICLONE_FORCE);
    return true;
  } catch {
    return false; // ext4, tmpfs, NFS: copy the bytes
  }
}

/** Reads `from` to its end, hashing; writes each non-zero chunk to `to` at the same offset. */
async function stream(from: FileHandle, to: FileHandle | undefined, total: number, t0: number, o: CopyOptions): Promise<{ digest: string; bytes: number }> {
  const h = createHash('sha256');
  const bufs = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
  const every = o.progressEveryMs ?? 5000;
  let nextReport = every;
  let pos = 0;
  let i = 0;
  let writing: Promise<unknown> = Promise.resolve();
  // A failure mid-loop leaves the other operation pending: keep its rejection from going unhandled.
  const quiet = <T>(p: Promise<T>) => (p.catch(() => undefined), p);
  // Only reads of `from` fail as SourceUnreadable; a failed write stays what it is (ENOSPC is the cache's).
  // Never past the length fstat gave at the start: a file that a writer keeps
  // extending would otherwise be read for ever; one that grew is caught after
  // (assertUnchanged compares the sizes).
  const read = (buf: Buffer, at: number) => from.read(buf, 0, Math.max(0, Math.min(CHUNK, total - at)), at).catch((e: unknown) => {
    throw new SourceUnreadable(`reading the image at byte ${at} failed: ${(e as Error).message}`, { cause: e });
  });
  let reading = quiet(read(bufs[0]!, 0));
  for (;;) {
    const { bytesRead } = await reading;
    if (bytesRead === 0) break;
    if (o.signal?.aborted) throw o.signal.reason ?? new Error('aborted');
    const buf = bufs[i % 3]!;
    // The buffer read next was last written two chunks ago; that write was awaited below.
    reading = quiet(read(bufs[(i + 1) % 3]!, pos + bytesRead));
    const chunk = buf.subarray(0, bytesRead);
    h.update(chunk);
    await writing;
    writing = to ? quiet(writeRuns(to, chunk, pos)) : Promise.resolve();
    pos += bytesRead;
    i++;
    const ms = performance.now() - t0;
    if (o.onProgress && ms >= nextReport) {
      nextReport = ms + every;
      o.onProgress({ bytes: pos, total, ms });
    }
  }
  await writing;
  return { digest: h.digest('hex'), bytes: pos };
}
