// Where a run's user-facing lines go: pbs_mom points fds 1 and 2 at the job's
// spool files (Torque), the CLI at the terminal, the tests at a buffer.
import { writeSync } from 'node:fs';

export interface HookIO {
  out: (text: string) => void;
  err: (text: string) => void;
}

// Plain write(2) on fds 1 and 2: pbs_mom points them at the spool files, and
// touching process.stdout would build a stream object (~3 ms) for one line.
function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') return; // a closed stdout must not fail the job
    }
  }
}

export const processIO: HookIO = {
  out: (t) => writeAll(1, t),
  err: (t) => writeAll(2, t),
};
