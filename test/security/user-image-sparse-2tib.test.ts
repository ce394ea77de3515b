// A user image whose size the node cannot take is the job's fault: refused
// from its size alone, before a byte is read, and never a reason to take the
// node offline.
import t from 'tap';
import { chownSync, closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY } from '../harness/mom.js';

const TiB = 1024 ** 4;

function sparse(path: string, size: number, head?: Buffer): void {
  const fd = openSync(path, 'w', 0o600);
  if (head) writeSync(fd, head, 0, head.length, 0);
  ftruncateSync(fd, size);
  closeSync(fd);
  chownSync(path, NOBODY.uid, NOBODY.gid);
}

function qcow2Header(virtualSize: bigint): Buffer {
  const b = Buffer.alloc(512);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4);
  b.writeUInt32BE(16, 20); // cluster bits
  b.writeBigUInt64BE(virtualSize, 24);
  b.writeUInt32BE(104, 100); // header length
  return b;
}

// A short deadline so that the unfixed code (which hashes first) ends in a
// bounded time; the fixed code refuses long before it.
const ini = '[policy]\nallow_user_images = true\n[timeouts]\ntotal = 30\ntool = 20\n';
const readLines = (mom: Mom) => mom.logLines().filter((l) => /copying the image|image ingested|copy progress|hash/i.test(String(l.msg)));

t.test('a 2 TiB sparse raw user image is refused with exit 1 from its size, and the node stays online', async (t) => {
  const mom = new Mom({ ini, privateCache: true });
  const img = join(mom.workdir, 'huge.raw');
  sparse(img, 2 * TiB);
  const r = await mom.prologue({ id: '51.srv', script: `#!/bin/sh\n#VM img=${img}\nhostname\n` });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vtorque: [^\n]*(2T|2\.0 TiB)[^\n]*more than this site allows/);
  t.match(r.er, /Fix: /);
  t.same(readLines(mom), [], 'nothing was hashed or copied');
  t.notMatch(mom.nodeState('node01').state, /offline/, 'the node is not taken offline');
});

t.test('a user image larger than the whole cache is refused with exit 1 before it is read', async (t) => {
  const mom = new Mom({ ini: ini + '[cache]\nmax_size = 64M\n', privateCache: true });
  const img = join(mom.workdir, 'dense.raw');
  // Not sparse: 100 MiB of data the cache (max_size 64M) could never hold.
  const fd = openSync(img, 'w', 0o600);
  const chunk = Buffer.alloc(1024 * 1024, 7);
  for (let i = 0; i < 100; i++) writeSync(fd, chunk);
  closeSync(fd);
  chownSync(img, NOBODY.uid, NOBODY.gid);
  const r = await mom.prologue({ id: '52.srv', script: `#!/bin/sh\n#VM img=${img}\nhostname\n` });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /max_size/);
  t.same(readLines(mom), [], 'nothing was hashed or copied');
  t.notMatch(mom.nodeState('node01').state, /offline/);
});

t.test('a qcow2 user image much larger than the virtual size its header declares is refused before it is read', async (t) => {
  const mom = new Mom({ ini, privateCache: true });
  const img = join(mom.workdir, 'padded.qcow2');
  sparse(img, 1 * TiB, qcow2Header(1024n * 1024n * 1024n));
  const r = await mom.prologue({ id: '53.srv', script: `#!/bin/sh\n#VM img=${img}\nhostname\n` });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /(1T|1\.0 TiB)/);
  t.same(readLines(mom), [], 'nothing was hashed or copied');
  t.notMatch(mom.nodeState('node01').state, /offline/);
});
