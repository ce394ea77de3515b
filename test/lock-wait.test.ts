// Two jobs on one node want the same uncached image: the first copies and
// verifies it under the digest's lock, the second waits. The wait must last
// as long as the holder may hold the lock, or a second job that only had to
// wait fails as a node fault and takes the node offline. A holder can hold it
// until its own deadline ([timeouts] total), 5 s more until it is ended, and
// [cache] lock_stale until a dead holder's lock is taken over.
import t from 'tap';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { acquireLock, holderMaxSeconds } from '../src/cache/lock.js';
import { parseConfig } from '../src/config/load.js';
import { Mom, SHARED_CACHE } from './harness/mom.js';

t.test('a waiter waits as long as the holder may hold the lock: [timeouts] total, the hard stop, lock_stale', async (t) => {
  t.equal(holderMaxSeconds(parseConfig('', 'x').config), 240 + 5 + 10, 'by default 255 s, no longer the 200 s of [timeouts] lock');
  const c = parseConfig('[timeouts]\ntotal = 600\n[cache]\nlock_stale = 30s\n', 'x').config;
  t.equal(holderMaxSeconds(c), 635, 'it follows total and lock_stale');
  const old = parseConfig('[timeouts]\nlock = 200\n', 'old.ini');
  t.match(old.warnings, [/unknown key \[timeouts\] lock is ignored/], 'an ini that still sets [timeouts] lock is told it no longer counts');
});

t.test('a second job on an image another prologue holds waits past the old [timeouts] lock, and then runs', async (t) => {
  // [timeouts] lock = 1: under the old bound this job would have given up after 1 s (cache-lock-wait, exit 2, node offline).
  const mom = new Mom({ privateCache: true, ini: '[timeouts]\nlock = 1\n' });
  // The verdict is keyed by digest: reuse the shared one, so the job's own run is short once the lock is free.
  mkdirSync(join(mom.cacheDir, 'verdicts'), { recursive: true });
  for (const v of existsSync(join(SHARED_CACHE, 'verdicts')) ? readdirSync(join(SHARED_CACHE, 'verdicts')) : []) copyFileSync(join(SHARED_CACHE, 'verdicts', v), join(mom.cacheDir, 'verdicts', v));
  const digest = execFileSync('sha256sum', [join(mom.poolDir, 'debian12.qcow2')], { encoding: 'utf8' }).split(' ')[0]!;
  // The holder: this process, as a first prologue copying the image would hold it (proper-lockfile, refreshed).
  const release = await acquireLock(`img-${digest}`, { dir: join(mom.cacheDir, 'locks'), waitSeconds: 0, staleSeconds: 10 });
  const run = mom.prologue({ id: '81.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2\necho\n' });
  const waiting = () => mom.logLines().some((l) => /another prologue is caching or verifying this image: waiting for it/.test(String(l.msg)));
  for (let i = 0; i < 1200 && !waiting(); i++) await new Promise((r) => setTimeout(r, 100));
  t.ok(waiting(), 'the second prologue waits for the holder');
  // Held three times the old bound after the wait began, then released, as a slow first copy finishes.
  await new Promise((r) => setTimeout(r, 3000));
  await release();
  const r = await run;
  t.equal(r.code, 0, `it ran once the holder was done: ${r.er}`);
  t.notMatch(r.er, /cache-lock-wait/);
  t.match(mom.logLines().map((l) => String(l.msg)).join('\n'), /unknown key \[timeouts\] lock is ignored/, 'the old key is logged as ignored');
});
