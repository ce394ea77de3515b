// Files of the job owner (#VM metadata=FILE, SSH public keys) are read by a
// child process running as the owner, so the kernel enforces exactly the
// owner's rights: no symlink, bind mount or race can make root read for them.
// The child is node with a fixed program (never anything the user supplied):
// it refuses what is not a regular file and reads at most `cap` bytes.
import { quote } from '../config/values.js';
import { ToolError, runTool } from '../tools/run.js';

const READER = `
const fs = require('fs');
const [path, cap] = [process.argv[1], Number(process.argv[2])];
let fd;
try { fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY); }
catch (e) { process.stderr.write(e.code + '\\n'); process.exit(e.code === 'ENOENT' ? 3 : 4); }
const st = fs.fstatSync(fd);
if (!st.isFile()) { process.stderr.write('NOTFILE\\n'); process.exit(4); }
if (st.size > cap) { process.stderr.write('TOOBIG ' + st.size + '\\n'); process.exit(5); }
const buf = Buffer.alloc(cap + 1);
let n = 0, r;
while ((r = fs.readSync(fd, buf, n, buf.length - n, null)) > 0) { n += r; if (n > cap) { process.stderr.write('TOOBIG\\n'); process.exit(5); } }
process.stdout.write(buf.subarray(0, n));
`;

export type ReadResult = { ok: true; text: string } | { ok: false; missing: boolean; why: string };

export async function readAsUser(path: string, who: { uid: number; gid: number }, cap: number, timeoutMs: number, signal?: AbortSignal): Promise<ReadResult> {
  let r;
  try {
    r = await runTool(process.execPath, ['-e', READER, path, String(cap)], {
      timeout: timeoutMs, uid: who.uid, gid: who.gid, okExitCodes: [3, 4, 5], maxBuffer: cap + 4096, signal,
    });
  } catch (e) {
    if (e instanceof ToolError) return { ok: false, missing: false, why: `could not be read as you (${e.message})` };
    throw e;
  }
  const err = r.stderr.trim().split('\n')[0] ?? '';
  if (r.exitCode === 3) return { ok: false, missing: true, why: 'does not exist' };
  if (r.exitCode === 5) return { ok: false, missing: false, why: `is larger than ${cap} bytes` };
  if (r.exitCode === 4) {
    const why = err === 'NOTFILE' ? 'is not a regular file'
      : err === 'ELOOP' ? 'is a symbolic link; give the file it points to'
        : err === 'EACCES' ? 'is not readable by you' : `cannot be opened (${quote(err, 30)})`;
    return { ok: false, missing: false, why };
  }
  return { ok: true, text: r.stdout };
}
