// A user image that changes under the node while it is being read is the
// job's fault (exit 1), never the node's: the node must not be taken offline
// because a user rewrote their own file.
import t from 'tap';
import { chownSync, closeSync, existsSync, ftruncateSync, openSync, readdirSync, readFileSync, readlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Mom, NOBODY } from '../harness/mom.js';

/** Bytes the process has read so far (all its threads), from /proc/PID/io. */
function rchar(pid: number): number {
  try {
    return Number(/rchar: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function holds(pid: number, path: string): boolean {
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`) === path;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

t.test('a user image rewritten in place while the node reads it: exit 1, and the node stays online', async (t) => {
  // Its 8 GiB of holes are allowed: it must be read, for the rewrite to land mid-read.
  const mom = new Mom({ ini: '[policy]\nallow_user_images = true\nuser_image_max_holes = 16G\n', privateCache: true });
  const img = join(mom.workdir, 'moving.raw');
  const fd = openSync(img, 'w', 0o600);
  writeSync(fd, randomBytes(1024 * 1024), 0, 1024 * 1024, 0);
  ftruncateSync(fd, 8 * 1024 ** 3); // sparse: long enough to read that the rewrite lands mid-read
  closeSync(fd);
  chownSync(img, NOBODY.uid, NOBODY.gid);

  let pid = 0;
  let rewrote = false;
  const run = mom.prologue({ id: '61.srv', script: `#!/bin/sh\n#VM img=${img}\nhostname\n` }, { onSpawn: (p) => { pid = p; } });
  // The attacker: once the prologue holds the file open and has read 64 MiB of it,
  // the owner (as nobody) rewrites its first MiB in place. Bounded: 20000 looks.
  const watcher = (async () => {
    let base = -1;
    for (let i = 0; i < 20000 && !rewrote; i++) {
      await new Promise((r) => setTimeout(r, 2));
      if (!pid || !existsSync(`/proc/${pid}`)) continue;
      if (!holds(pid, img)) continue;
      const now = rchar(pid);
      if (base < 0) base = now;
      if (now - base < 64 * 1024 * 1024) continue;
      await new Promise<void>((resolve, reject) => {
        const dd = spawn('/bin/dd', ['if=/dev/urandom', `of=${img}`, 'bs=1M', 'count=1', 'conv=notrunc'], { uid: NOBODY.uid, gid: NOBODY.gid, stdio: 'ignore' });
        dd.on('error', reject);
        dd.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`dd exited ${code}`))));
      });
      rewrote = true;
    }
  })();
  const r = await run;
  await watcher;
  t.ok(rewrote, 'the file was rewritten while the prologue was reading it');
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vtorque: .*changed while/);
  t.match(r.er, /Fix: /);
  t.notMatch(mom.nodeState('node01').state, /offline/, 'the node is not taken offline');
  t.same(readdirSync(join(mom.cacheDir, 'tmp')), [], 'no partial copy is left');
});
