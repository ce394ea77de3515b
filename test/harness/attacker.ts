// The attacker of test/security/: an unprivileged user (nobody) running code
// of their own on the node, at the same time as the prologue, as a cluster
// user logged in on a compute node could. Every loop is bounded in time.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { NOBODY, testImages, type User } from './mom.js';

// Not the test runner's environment: tap's NODE_OPTIONS would make the
// attacker's process write coverage files where nobody may not.
const CLEAN_ENV = { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' };

/** Runs a Node snippet as the user and waits; the snippet reads them as process.argv.slice(1). */
export function asUser(code: string, args: string[] = [], user: User = NOBODY): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['-e', code, '--', ...args], { uid: user.uid, gid: user.gid, encoding: 'utf8', cwd: '/', timeout: 60_000, env: CLEAN_ENV });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Starts a Node snippet as the user in the background (a swapper loop): it
 * gets args as process.argv.slice(1) and must end by itself within its own
 * bound. stop() kills it and resolves with what it printed.
 */
export function startAsUser(code: string, args: string[] = [], user: User = NOBODY): { child: ChildProcess; stop: () => Promise<string> } {
  const child = spawn(process.execPath, ['-e', code, '--', ...args], { uid: user.uid, gid: user.gid, cwd: '/', stdio: ['ignore', 'pipe', 'inherit'], env: CLEAN_ENV });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const done = new Promise<string>((resolve) => child.on('exit', () => resolve(out)));
  return {
    child,
    stop: () => {
      child.kill('SIGTERM');
      return done;
    },
  };
}

/** The errno code a write-open of path gets as the user ('OK' if it succeeds). */
export function writeOpenAs(path: string, user: User = NOBODY): string {
  const r = asUser(`try { require('fs').closeSync(require('fs').openSync(process.argv[1], 'r+')); console.log('OK'); } catch (e) { console.log(e.code); }`, [path], user);
  return r.stdout.trim();
}

/**
 * A user's private image (allow_user_images): a copy of a test image, 0600,
 * in a 0700 directory of the user's own under `home`, as a user keeps a build
 * nobody else may read. Returns the image's path.
 */
export function privateUserImage(home: string, testImage: string, name: string, user: User = NOBODY): string {
  const dir = join(home, 'secret-images-dir');
  mkdirSync(dir, { mode: 0o700 });
  chmodSync(dir, 0o700);
  chownSync(dir, user.uid, user.gid);
  const img = join(dir, name);
  copyFileSync(join(testImages(), testImage), img);
  chmodSync(img, 0o600);
  chownSync(img, user.uid, user.gid);
  return img;
}
