// Files of the job owner (#VM metadata=FILE, SSH public keys) are read by a
// child process running as the owner, so the kernel enforces exactly the
// owner's rights: no symlink, bind mount or race can make root read for them.
// The child is dd (a process start costs ~2 ms, node's ~40 ms): one read of at
// most cap+1 bytes, no symlink as the last component, and O_NONBLOCK so a FIFO
// reads as empty instead of holding the prologue until its deadline.
import type { Config } from '../config/schema.js';
import { quote } from '../config/values.js';
import { ToolError, runTool } from '../tools/run.js';

export type ReadResult = { ok: true; text: string } | { ok: false; missing: boolean; why: string };

export async function readAsUser(config: Config, path: string, who: { uid: number; gid: number }, cap: number, signal?: AbortSignal): Promise<ReadResult> {
  let r;
  try {
    r = await runTool(config.tools.dd, [`if=${path}`, `bs=${cap + 1}`, 'count=1', 'iflag=nofollow,nonblock', 'status=none'], {
      timeout: 15_000, toolKey: 'dd', uid: who.uid, gid: who.gid, okExitCodes: [1], maxBuffer: cap + 4096, signal,
    });
  } catch (e) {
    if (e instanceof ToolError) return { ok: false, missing: false, why: `could not be read as you (${e.message})` };
    throw e;
  }
  if (r.exitCode !== 0) {
    const err = r.stderr;
    if (/No such file or directory/.test(err)) return { ok: false, missing: true, why: 'does not exist' };
    if (/Too many levels of symbolic links/.test(err)) return { ok: false, missing: false, why: 'is a symbolic link; give the file it points to' };
    if (/Permission denied/.test(err)) return { ok: false, missing: false, why: 'is not readable by you' };
    if (/Is a directory/.test(err)) return { ok: false, missing: false, why: 'is a directory' };
    return { ok: false, missing: false, why: `cannot be read (${quote(err.trim().split('\n')[0] ?? '', 80)})` };
  }
  if (Buffer.byteLength(r.stdout) > cap) return { ok: false, missing: false, why: `is larger than ${cap} bytes` };
  return { ok: true, text: r.stdout };
}
