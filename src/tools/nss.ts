// Users and groups as the node's NSS knows them (getent), because site users
// live in LDAP/SSSD, not only in /etc/passwd. Every lookup in the program goes
// through here, memoised per process: the prologue asks about the job owner
// for the image check, the seed and the error report, and each question
// costs a process and an NSS round trip (LDAP can take a second). Callers
// turn "not known" into their own fault: what to fix differs by who asked.
import type { Config } from '../config/schema.js';
import { runTool } from './run.js';

export interface PasswdEntry {
  user: string;
  uid: number;
  gid: number;
  /** Raw GECOS; may itself hold ':' (possible through LDAP). */
  gecos: string;
  home: string;
  shell: string;
}

export interface GroupEntry {
  group: string;
  gid: number;
  members: string[];
}

const ID = /^[0-9]+$/;

/**
 * One passwd line. A GECOS with ':' in it splits into extra fields: home and
 * shell are always the last two. Undefined when the line is not a whole entry.
 */
export function parsePasswd(line: string): PasswdEntry | undefined {
  const f = line.split(':');
  if (f.length < 7 || !ID.test(f[2]!) || !ID.test(f[3]!)) return undefined;
  return { user: f[0]!, uid: Number(f[2]), gid: Number(f[3]), gecos: f.slice(4, f.length - 2).join(':'), home: f[f.length - 2]!, shell: f[f.length - 1]! };
}

/** One group line; undefined when it is not a whole entry. */
export function parseGroup(line: string): GroupEntry | undefined {
  const f = line.split(':');
  if (f.length < 3 || !ID.test(f[2]!)) return undefined;
  return { group: f[0]!, gid: Number(f[2]), members: (f[3] ?? '').split(',').filter((m) => m !== '') };
}

const memo = new Map<string, Promise<unknown>>();

/**
 * getent DB -- KEY, once per process for each tool, database and key. The
 * first line of its answer, or undefined when NSS has none (exit 2). A tool
 * failure (missing, timed out, stopped by signal) rejects and is not kept, so
 * a later caller asks again.
 */
function ask<T>(config: Config, db: 'passwd' | 'group' | 'initgroups', key: string, parse: (line: string) => T | undefined, signal?: AbortSignal): Promise<T | undefined> {
  const k = `${config.tools.getent}\0${db}\0${key}`;
  let p = memo.get(k) as Promise<T | undefined> | undefined;
  if (!p) {
    p = runTool(config.tools.getent, [db, '--', key], { timeout: 10_000, toolKey: 'getent', okExitCodes: [2], signal })
      .then((r) => (r.exitCode === 0 ? parse(r.stdout.replace(/\n$/, '').split('\n')[0] ?? '') : undefined));
    memo.set(k, p);
    p.catch(() => memo.delete(k));
  }
  return p;
}

/** The user's passwd entry, or undefined when NSS does not know them. */
export const passwdOf = (config: Config, user: string, signal?: AbortSignal): Promise<PasswdEntry | undefined> =>
  ask(config, 'passwd', user, parsePasswd, signal);

/** The group's entry by name or numeric gid, or undefined when NSS does not know it. */
export const groupOf = (config: Config, group: string, signal?: AbortSignal): Promise<GroupEntry | undefined> =>
  ask(config, 'group', group, parseGroup, signal);

/** The user's supplementary groups as NSS gives them (`getent initgroups USER` prints `USER gid gid ...`); none when unknown. */
export async function initGroupsOf(config: Config, user: string, signal?: AbortSignal): Promise<number[]> {
  const gids = await ask(config, 'initgroups', user, (l) => l.trim().split(/\s+/).slice(1).filter((g) => ID.test(g)).map(Number), signal);
  return gids ?? [];
}
