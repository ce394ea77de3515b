// The job owner as the node's NSS knows them (LDAP/SSSD included), so the VM
// user gets the same uid, gid and home: files on NFS then belong to the same
// person inside and outside the VM.
import type { Config } from '../config/schema.js';
import { quote } from '../config/values.js';
import { NodeFault } from '../core/errors.js';
import { groupOf, passwdOf } from '../tools/nss.js';
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

const unknown = (what: string, name: string) => new NodeFault(`the job's ${what} ${quote(name, 40)} is not known on this node`, [{
  id: 'seed-account', where: `getent ${what === 'user' ? 'passwd' : 'group'} ${quote(name, 40)}`,
  message: 'NSS found nothing, so the VM user cannot get the same ids',
  fix: "check the node's NSS (LDAP/SSSD: systemctl status sssd; getent passwd USER)",
}]);

export async function lookupAccount(config: Config, user: string, group: string, signal?: AbortSignal): Promise<Account> {
  const [pw, gr] = await Promise.all([passwdOf(config, user, signal), groupOf(config, group, signal)]);
  if (!pw) throw unknown('user', user);
  if (!gr) throw unknown('group', group);
  return { user, uid: pw.uid, group, gid: gr.gid, gecos: pw.gecos, home: pw.home };
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
