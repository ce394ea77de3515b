// Runs as the job's owner (never root), as the hidden subcommand
// `__append-as-owner PATH`: appends stdin to PATH. Refuses symlinks, FIFOs and files the owner does not own, so a root
// prologue cannot be tricked into writing anywhere the user could not.
import { closeSync, constants, fstatSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';

export function appendAsOwner(path: string | undefined): number {
  if (!path || !path.startsWith('/')) return fail('usage: append-as-owner /absolute/path < text');
  if (process.getuid?.() === 0 && process.env.VTORQUE_ALLOW_ROOT !== '1') return fail('refusing to run as root');
  const text = readFileSync(0);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY, 0o600);
  } catch (e) {
    return fail(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return fail(`${path} is not a regular file`);
    if (st.uid !== process.getuid?.()) return fail(`${path} belongs to uid ${st.uid}, not to the job's owner`);
    let off = 0;
    while (off < text.length) off += writeSync(fd, text, off);
    fsyncSync(fd);
    return 0;
  } finally {
    closeSync(fd);
  }
}

function fail(msg: string): number {
  process.stderr.write(`append-as-owner: ${msg}\n`);
  return 3;
}

