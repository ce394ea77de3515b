// Part of finding 9c: a job refused by the prologue gets its report in its
// Error_Path, which the user names (qsub -e) and controls. Whether that path
// is a directory (then Torque's <name>.e<seq> goes inside it) is decided by the
// child that runs as the job's owner, never by a stat as root: root would look
// through the user's symlinks, and a hung mount would stall the prologue.
import t from 'tap';
import { chmodSync, chownSync, closeSync, constants, mkdirSync, openSync, readSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY } from '../harness/mom.js';
import { mkfifoSync } from '../harness/fifo.js';

const SCRIPT = '#!/bin/sh\n#VM vcpus=999\necho\n';

/** The admin log's record of the delivery attempt. */
const deliveryLog = (m: Mom) => m.logLines().filter((l) => /report (could not be )?(was )?delivered/.test(String(l.msg))).map((l) => JSON.stringify(l)).join('\n');

t.test('an Error_Path symlink to a root-only directory is not looked through by root', async (t) => {
  const m = new Mom();
  const secret = join(m.root, 'secret');
  mkdirSync(join(secret, 'inner'), { recursive: true, mode: 0o700 });
  chmodSync(secret, 0o700);
  const link = join(m.workdir, 'link');
  symlinkSync(join(secret, 'inner'), link);
  chownSync(link, NOBODY.uid, NOBODY.gid);
  const r = await m.prologue({ id: '81.head', script: SCRIPT, qstat: { Error_Path: `head:${link}`, Join_Path: 'n', start_count: '1' } });
  t.equal(r.code, 1, 'still the job\'s fault');
  t.match(r.er, /vcpus=999 is more than this site allows/);
  t.same(readdirSync(join(secret, 'inner')), [], 'nothing written behind the link');
  const log = deliveryLog(m);
  t.match(log, /could not be delivered/, 'the owner cannot write there');
  t.notMatch(log, /link\/job\.e81/, 'root did not find out, for the user, that the link leads to a directory');
});

t.test('an Error_Path that is a FIFO gets no report and does not hang the prologue', async (t) => {
  const m = new Mom();
  const fifo = join(m.workdir, 'fifo');
  mkfifoSync(fifo);
  chownSync(fifo, NOBODY.uid, NOBODY.gid);
  // A reader, so that a writer's open would succeed and only the file-type check can stop it.
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const r = await m.prologue({ id: '82.head', script: SCRIPT, qstat: { Error_Path: `head:${fifo}`, Join_Path: 'n', start_count: '1' } });
    t.equal(r.code, 1);
    let got = 0;
    try {
      got = readSync(reader, Buffer.alloc(4096));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
    t.equal(got, 0, 'nothing was written into the FIFO');
    t.match(deliveryLog(m), /could not be delivered/);
  } finally {
    closeSync(reader);
  }
});

t.test('an Error_Path that is the owner\'s directory gets Torque\'s <name>.e<seq> inside it', async (t) => {
  const m = new Mom();
  const dir = join(m.workdir, 'errs');
  mkdirSync(dir);
  chownSync(dir, NOBODY.uid, NOBODY.gid);
  const r = await m.prologue({ id: '83.head', script: SCRIPT, qstat: { Error_Path: `head:${dir}`, Join_Path: 'n', start_count: '1' } });
  t.equal(r.code, 1);
  t.same(readdirSync(dir), ['job.e83'], 'the report is in the directory, named as Torque names it');
  t.match(r.er, new RegExp(`this report was also written to ${dir}/job\\.e83`));
});
