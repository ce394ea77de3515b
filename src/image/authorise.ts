// Is this job allowed to use this image? It must be a regular file inside the
// admin's pool, reached without leaving the pool, and neither the file nor any
// directory from the pool down to it may be writable by anyone but root.
import { lstatSync, realpathSync, statSync, type Stats } from 'node:fs';
import { lstat, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, relative, sep } from 'node:path';
import type { Config } from '../config/schema.js';
import { JobFault, NodeFault, type Problem } from '../core/errors.js';

export interface AuthorisedImage {
  /** As the job named it. */
  name: string;
  /** Real path, symlinks resolved; what every later stage opens. */
  path: string;
  origin: 'pool' | 'user';
  /** From the file name: what the admin or user says it is. */
  declaredFormat: 'qcow2' | 'raw' | 'vmdk' | undefined;
  stat: { dev: number; ino: number; size: number; mtimeMs: number; ctimeMs: number; uid: number };
}

export interface AuthoriseInput {
  img: string;
  config: Config;
  /** The job owner's uid, for [policy] allow_user_images. */
  ownerUid?: number;
}

const reject = (img: string, id: string, message: string, fix: string) =>
  new JobFault(`image ${JSON.stringify(img)} is not allowed`, [{ id, where: `img=${img}`, message, fix }]);

export function declaredFormatOf(name: string): AuthorisedImage['declaredFormat'] {
  const ext = name.toLowerCase().split('.').pop();
  if (ext === 'qcow2' || ext === 'qcow') return 'qcow2';
  if (ext === 'raw' || ext === 'img') return 'raw';
  if (ext === 'vmdk') return 'vmdk';
  return undefined;
}

function unsafeMode(st: Stats): string | undefined {
  if (st.uid !== 0) return `is owned by uid ${st.uid}, not root`;
  if (st.mode & 0o022) return `has mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}, writable by ${st.mode & 0o020 ? 'group' : ''}${(st.mode & 0o022) === 0o022 ? ' and ' : ''}${st.mode & 0o002 ? 'others' : ''}`;
  return undefined;
}

/** The value later stages use, from a path that already passed its checks. */
export function describeImage(name: string, real: string, st: Stats, origin: AuthorisedImage['origin']): AuthorisedImage {
  const stat = { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, uid: st.uid };
  return { name, path: real, origin, declaredFormat: declaredFormatOf(real), stat };
}

export async function authoriseImage(input: AuthoriseInput): Promise<AuthorisedImage> {
  if (isAbsolute(input.img)) return authoriseUserImage(input);
  return authorisePoolImage(input);
}

/** The admin's pool is a local directory of root's: its checks may block. */
function authorisePoolImage(input: AuthoriseInput): AuthorisedImage {
  const { img, config } = input;

  let pool: string;
  try {
    pool = realpathSync(config.paths.image_pool);
    const pst = statSync(pool);
    if (!pst.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    const why = unsafeMode(pst);
    if (why) {
      throw new NodeFault(`image pool ${pool} ${why}`, [{ id: 'pool-unsafe', where: pool, message: why, fix: 'chown root and chmod go-w the image pool' }]);
    }
  } catch (e) {
    if (e instanceof NodeFault) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`image pool ${config.paths.image_pool} is not usable (${code})`, [
      { id: 'pool-missing', where: config.paths.image_pool, message: `is not usable: ${code}`, fix: 'create it (root-owned, mode 0755) or fix [paths] image_pool' },
    ]);
  }

  const candidate = `${pool}/${img}`;
  let real: string;
  try {
    real = realpathSync(candidate);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw reject(img, 'not-in-pool', `there is no image ${JSON.stringify(img)} in the image pool`, `check the name; ask your admin which images the pool (${config.paths.image_pool}) holds`);
    }
    if (code === 'ELOOP') throw reject(img, 'pool-escape', 'is a symlink loop', 'ask your admin to fix the image pool');
    throw new NodeFault(`image ${candidate} cannot be resolved (${code})`, [{ id: 'pool-io', where: candidate, message: `cannot be resolved: ${code}`, fix: 'check the image pool filesystem' }]);
  }
  const rel = relative(pool, real);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw reject(img, 'pool-escape', `resolves to ${real}, outside the image pool`, 'use an image that lives in the pool; symlinks may not lead out of it');
  }

  // lstat, not stat: the real path has no symlinks left, so any we meet now is a race.
  const st = lstatSync(real);
  if (!st.isFile()) {
    const what = st.isFIFO() ? 'a FIFO' : st.isDirectory() ? 'a directory' : st.isSocket() ? 'a socket' : st.isBlockDevice() || st.isCharacterDevice() ? 'a device' : 'not a regular file';
    throw reject(img, 'not-regular', `is ${what}`, 'name an image file');
  }
  const problems: Problem[] = [];
  const fileWhy = unsafeMode(st);
  if (fileWhy) problems.push({ id: 'writable', where: real, message: `the image ${fileWhy}`, fix: `ask your admin to run: chown root ${real} && chmod go-w ${real}` });
  for (let d = dirname(real); ; d = dirname(d)) {
    const why = unsafeMode(lstatSync(d));
    if (why) problems.push({ id: 'writable', where: d, message: `directory ${d} ${why}`, fix: `ask your admin to run: chown root ${d} && chmod go-w ${d}` });
    if (d === pool || !d.startsWith(pool + sep)) break;
  }
  if (problems.length > 0) throw new JobFault(`image ${JSON.stringify(img)} is not protected from tampering`, problems);
  return describeImage(img, real, st, 'pool');
}

/**
 * A user's path may lead into a hung NFS or FUSE mount: every look at it is
 * asynchronous (the deadline timer keeps running) and bounded by [timeouts]
 * tool, and a path that does not answer is the job's to fix.
 */
async function authoriseUserImage(input: AuthoriseInput): Promise<AuthorisedImage> {
  const { img, config, ownerUid } = input;
  if (!config.policy.allow_user_images) {
    throw reject(img, 'not-in-pool', `img is an absolute path; this site only allows images from its pool`, 'give the name of a pool image (ask your admin), or ask them to set [policy] allow_user_images = true');
  }
  const seconds = config.timeouts.tool;
  const bounded = <T>(p: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, fail) => {
      timer = setTimeout(() => fail(reject(img, 'not-found', `did not answer within ${seconds} s (a hung network or FUSE filesystem?)`, 'put the image on a filesystem the node can read, such as your home or scratch directory')), seconds * 1000);
      timer.unref();
    });
    return Promise.race([p, late]).finally(() => clearTimeout(timer));
  };
  let real: string;
  try {
    real = await bounded(realpath(img));
  } catch (e) {
    if (e instanceof JobFault) throw e;
    throw reject(img, 'not-found', `cannot be found (${(e as NodeJS.ErrnoException).code})`, 'check the path');
  }
  let st: Stats;
  try {
    st = await bounded(lstat(real));
  } catch (e) {
    if (e instanceof JobFault) throw e;
    throw reject(img, 'not-found', `cannot be examined (${(e as NodeJS.ErrnoException).code})`, 'check the path');
  }
  if (!st.isFile()) throw reject(img, 'not-regular', 'is not a regular file', 'name an image file');
  if (ownerUid === undefined || st.uid !== ownerUid) {
    throw reject(img, 'not-owner', `is owned by uid ${st.uid}, not by the job owner`, 'use an image file you own');
  }
  return describeImage(img, real, st, 'user');
}
