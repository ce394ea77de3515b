// The job owner as the node's NSS knows them (LDAP/SSSD included), so the VM
// user gets the same uid, gid and home: files on NFS then belong to the same
// person inside and outside the VM.
import type { Config } from '../config/schema.js';
import { quote } from '../config/values.js';
import { NodeFault } from '../core/errors.js';
import { runTool } from '../tools/run.js';
import type { SeedShared } from './index.js';

export interface Account {
  user: string;
  uid: number;
  group: string;
  gid: number;
  /** Raw GECOS from NSS; names.ts decides whether it may go into the VM. */
  gecos: string;
  home: string;
}

async function getent(config: Config, db: 'passwd' | 'group', name: string, signal?: AbortSignal): Promise<string[] | undefined> {
  const r = await runTool(config.tools.getent, [db, '--', name], { timeout: 10_000, toolKey: 'getent', okExitCodes: [2], signal });
  if (r.exitCode !== 0) return undefined;
  return r.stdout.replace(/\n$/, '').split('\n')[0]?.split(':');
}

const unknown = (what: string, name: string) => new NodeFault(`the job's ${what} ${quote(name, 40)} is not known on this node`, [{
  id: 'seed-account', where: `getent ${what === 'user' ? 'passwd' : 'group'} ${quote(name, 40)}`,
  message: 'NSS found nothing, so the VM user cannot get the same ids',
  fix: "check the node's NSS (LDAP/SSSD: systemctl status sssd; getent passwd USER)",
}]);

export async function lookupAccount(config: Config, user: string, group: string, signal?: AbortSignal): Promise<Account> {
  const [pw, gr] = await Promise.all([getent(config, 'passwd', user, signal), getent(config, 'group', group, signal)]);
  if (!pw || pw.length < 7 || !/^[0-9]+$/.test(pw[2]!) || !/^[0-9]+$/.test(pw[3]!)) throw unknown('user', user);
  if (!gr || gr.length < 3 || !/^[0-9]+$/.test(gr[2]!)) throw unknown('group', group);
  // A GECOS with ':' in it (possible through LDAP) splits into extra fields:
  // home and shell are always the last two.
  return {
    user, uid: Number(pw[2]), group, gid: Number(gr[2]),
    gecos: pw.slice(4, pw.length - 2).join(':'),
    home: pw[pw.length - 2]!,
  };
}

/** fn's promise, made once per key and job. Rejected ones are kept too: every VM of the job then fails the same way. */
export function sharedOnce<T>(shared: SeedShared | undefined, key: string, fn: () => Promise<T>): Promise<T> {
  if (!shared) return fn();
  let p = shared.memo.get(key) as Promise<T> | undefined;
  if (!p) {
    p = fn();
    p.catch(() => undefined);
    shared.memo.set(key, p);
  }
  return p;
}

/** The job owner from NSS, once per job: the prologue also takes the per-job files' owner from it. */
export function jobAccount(shared: SeedShared | undefined, config: Config, user: string, group: string, signal?: AbortSignal): Promise<Account> {
  return sharedOnce(shared, `account\0${user}\0${group}`, () => lookupAccount(config, user, group, signal));
}
