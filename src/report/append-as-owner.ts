// Runs as the job's owner (never root), as the hidden subcommand
// `__append-as-owner PATH [NAME]`: appends stdin to PATH, or to PATH/NAME when
// PATH is a directory (Torque's rule for an error path), and prints the file it
// wrote. Refuses symlinks, FIFOs and files the owner does not own, so a root
// prologue cannot be tricked into writing anywhere the user could not.
import { closeSync, constants, fstatSync, fsyncSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';

/** One path component: what Torque's <job name>.e<seq> must be to stay inside the directory. */
export function isFileName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

export function appendAsOwner(path: string | undefined, nameInDir?: string): number {
  if (!path || !path.startsWith('/')) return fail('usage: append-as-owner /absolute/path [file-name-if-a-directory] < text');
  if (nameInDir !== undefined && !isFileName(nameInDir)) return fail(`${JSON.stringify(nameInDir)} is not a file name`);
  if (process.getuid?.() === 0 && process.env.VTORQUE_ALLOW_ROOT !== '1') return fail('refusing to run as root');
  const text = readFileSync(0);
  let target = path;
  if (nameInDir !== undefined) {
    // Here, not in the root prologue: this stat follows the user's symlinks with
    // the user's rights only, and if it hangs on a dead mount it hangs this
    // child, which runTool's timeout ends, not the prologue's event loop.
    try {
      if (statSync(path).isDirectory()) target = `${path}/${nameInDir}`;
    } catch {
      /* not there yet, or not the user's to see: a file name */
    }
  }
  let fd: number;
  try {
    fd = openSync(target, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY, 0o600);
  } catch (e) {
    return fail(`cannot open ${target}: ${(e as NodeJS.ErrnoException).code}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return fail(`${target} is not a regular file`);
    if (st.uid !== process.getuid?.()) return fail(`${target} belongs to uid ${st.uid}, not to the job's owner`);
    let off = 0;
    while (off < text.length) off += writeSync(fd, text, off);
    fsyncSync(fd);
    process.stdout.write(`${target}\n`);
    return 0;
  } finally {
    closeSync(fd);
  }
}

function fail(msg: string): number {
  process.stderr.write(`append-as-owner: ${msg}\n`);
  return 3;
}
