// Issue 21 item 2: a user's image costs the node what it holds, not what its
// file claims. Root reads and hashes holes as zeros, so a sparse file with
// more holes than [policy] user_image_max_holes is refused from its fstat
// before a byte is read, and whatever is read is read within [timeouts]
// user_image_read and never up to the prologue's deadline: each ends as the
// job's fault (exit 1) with its limit and its fix, and pbsnodes is never
// asked to offline the node.
import t from 'tap';
import { chownSync, closeSync, copyFileSync, ftruncateSync, openSync, readdirSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Mom, NOBODY, testImages } from '../harness/mom.js';

type Tap = Pick<typeof t, 'same' | 'notMatch'>;

const GiB = 1024 ** 3;

/** A raw file of `size` bytes with `data` random bytes written at its start: the rest is one hole. */
function sparseRaw(path: string, size: number, data: number): void {
  const fd = openSync(path, 'w', 0o600);
  writeSync(fd, randomBytes(data), 0, data, 0);
  ftruncateSync(fd, size);
  closeSync(fd);
  chownSync(path, NOBODY.uid, NOBODY.gid);
}

// total 30: without these limits the old code reads until the deadline and ends with exit 2.
const ini = (extra = '') => `[policy]\nallow_user_images = true\n${extra}[timeouts]\ntotal = 30\ntool = 20\n`;
const readLines = (mom: Mom) => mom.logLines().filter((l) => /copying the image|image ingested|copy progress|image copied/i.test(String(l.msg)));
const script = (img: string) => `#!/bin/sh\n#VM img=${img}\nhostname\n`;

/** The problem ids the admin log gives for the failed job. */
const failedIds = (mom: Mom): string[] => {
  const f = mom.logLines().find((l) => l.msg === 'job failed') as { err?: { problems?: { id: string }[] } } | undefined;
  return (f?.err?.problems ?? []).map((p) => p.id);
};

function nodeUntouched(t: Tap, mom: Mom): void {
  t.same(mom.pbsnodesCalls(), [], 'pbsnodes was never asked to offline the node');
  t.notMatch(mom.nodeState('node01').state, /offline/, 'the node is not offline');
  t.same(readdirSync(join(mom.cacheDir, 'tmp')), [], 'no partial copy is left');
}

t.test('a 100 GiB sparse raw user image holding 5 MiB is refused from its holes, before it is read: exit 1, node online', async (t) => {
  const mom = new Mom({ ini: ini(), privateCache: true });
  const img = join(mom.workdir, 'sparse.raw');
  sparseRaw(img, 100 * GiB, 5 * 1024 * 1024);
  const r = await mom.prologue({ id: '71.srv', script: script(img) });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vtorque: .*sparse\.raw is a sparse file the node would have to read in full/);
  t.same(failedIds(mom), ['image-sparse']);
  t.match(r.er, /sparse\.raw: is 100 GiB long but holds 5\.0 MiB: its 100(\.0)? GiB of holes are more than this site reads for a user image \(\[policy\] user_image_max_holes 4G\)/);
  t.match(r.er, /Fix: convert it to qcow2, which stores no holes \(qemu-img convert -O qcow2 SRC DST\.qcow2/);
  t.same(readLines(mom), [], 'nothing was copied or hashed');
  nodeUntouched(t, mom);
});

t.test('holes allowed, the same image is read for at most [timeouts] user_image_read: exit 1 image-slow, node online', async (t) => {
  const mom = new Mom({ ini: ini('user_image_max_holes = 200G\n') + 'user_image_read = 2\n', privateCache: true });
  const img = join(mom.workdir, 'sparse.raw');
  sparseRaw(img, 100 * GiB, 5 * 1024 * 1024);
  const r = await mom.prologue({ id: '72.srv', script: script(img) });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vtorque: .*sparse\.raw could not be read in the time this node gives a user image/);
  t.same(failedIds(mom), ['image-slow']);
  t.match(r.er, /sparse\.raw: copying and hashing it into the node's cache did not finish within 2 s \(\[timeouts\] user_image_read\)/);
  t.match(r.er, /Fix: make the image smaller \(qemu-img convert -c -O qcow2/);
  nodeUntouched(t, mom);
});

t.test("a user image read never runs into the prologue's deadline: it stops 10 s before it, as the job's fault", async (t) => {
  // 1 TiB of holes, allowed: no node hashes that in the ~20 s left of total = 30.
  const mom = new Mom({ ini: ini('user_image_max_holes = 2T\nmax_virtual_size = 2T\n'), privateCache: true });
  const img = join(mom.workdir, 'huge.raw');
  sparseRaw(img, 1024 * GiB, 1024 * 1024);
  const r = await mom.prologue({ id: '73.srv', script: script(img) });
  t.equal(r.code, 1, r.er);
  t.same(failedIds(mom), ['image-slow']);
  t.match(r.er, /huge\.raw: copying and hashing it into the node's cache did not finish within the [0-9]+ s the prologue had left before its deadline \(\[timeouts\] total\)/);
  t.notMatch(r.er, /deadline of 30 s .* passed/, 'not the deadline itself');
  nodeUntouched(t, mom);
});

t.test('a sparse raw user image within user_image_max_holes is copied, verified and prepared', async (t) => {
  const mom = new Mom({ ini: ini().replace('total = 30\ntool = 20', 'total = 600\ntool = 300'), privateCache: true });
  const img = join(mom.workdir, 'small.raw');
  // 64 MiB long, about 4.6 MiB allocated: copyFileSync keeps the holes (copy_file_range).
  copyFileSync(join(testImages(), 'debian-ok.raw'), img);
  chownSync(img, NOBODY.uid, NOBODY.gid);
  const r = await mom.prologue({ id: '74.srv', script: script(img) });
  t.equal(r.code, 0, r.er);
  t.ok(readLines(mom).some((l) => l.msg === 'image copied'), 'it was copied');
  t.same(mom.pbsnodesCalls(), []);
});
