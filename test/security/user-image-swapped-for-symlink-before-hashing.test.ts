// The file that was authorised is the file that is hashed: a symlink or
// another file swapped in after the checks cannot make root hash (and so
// leak a digest prefix of) a file the user cannot read.
import t from 'tap';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { describeImage } from '../../src/image/authorise.js';
import { digestOf } from '../../src/image/verify.js';
import { NOBODY } from '../harness/mom.js';

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vt-swap-'));
  chmodSync(root, 0o755);
  const secret = join(root, 'root-only');
  writeFileSync(secret, 'root secret\n', { mode: 0o600 });
  const home = join(root, 'home');
  mkdirSync(home, { mode: 0o755 });
  chownSync(home, NOBODY.uid, NOBODY.gid);
  const img = join(home, 'mine.raw');
  writeFileSync(img, Buffer.alloc(4096, 1), { mode: 0o600 });
  chownSync(img, NOBODY.uid, NOBODY.gid);
  const config = parseConfig(`[paths]\ncache_dir = ${root}/cache\nimage_pool = ${root}\n[policy]\nallow_user_images = true\n`, 'x').config;
  const authorised = describeImage(img, img, lstatSync(img), 'user');
  return { root, secret, img, config, authorised };
}
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

t.test('a symlink to a root-only file swapped in after authorisation is not hashed', async (t) => {
  const { secret, img, config, authorised } = setup();
  renameSync(img, `${img}.old`);
  symlinkSync(secret, img);
  const got = await digestOf(authorised, config).then((d) => d.digest, (e: Error) => e);
  t.not(got, sha('root secret\n'), 'the root-only file was not hashed');
  t.type(got, Error, 'the swap is refused');
  t.match((got as Error).message, /changed|replaced|no longer/);
});

t.test('another regular file renamed over the authorised one is not hashed', async (t) => {
  const { root, img, config, authorised } = setup();
  const other = join(root, 'other');
  writeFileSync(other, 'root secret\n', { mode: 0o600 });
  renameSync(other, img);
  const got = await digestOf(authorised, config).then((d) => d.digest, (e: Error) => e);
  t.not(got, sha('root secret\n'), 'the other file was not hashed');
  t.type(got, Error, 'the swap is refused');
});

t.test('the same holds for a pool image', async (t) => {
  const { root, secret, config } = setup();
  const pooled = join(root, 'pool.raw');
  writeFileSync(pooled, Buffer.alloc(4096, 2), { mode: 0o644 });
  const authorised = describeImage('pool.raw', pooled, lstatSync(pooled), 'pool');
  renameSync(pooled, `${pooled}.old`);
  symlinkSync(secret, pooled);
  const got = await digestOf(authorised, config).then((d) => d.digest, (e: Error) => e);
  t.not(got, sha('root secret\n'));
  t.type(got, Error);
});
