// The job owner the seed tests use: a real account with a GECOS full of YAML
// and shell metacharacters, as NSS would hand it over from LDAP.
import { execFileSync, spawnSync } from 'node:child_process';

export const SEED_USER = { name: 'vtseed', uid: 4242, group: 'vtseedgrp', gid: 4343, gecos: 'Vé "Seed" #1 {x} &*! \'q\'' };

// Test files run in parallel: another may create the account first (exit 9, "exists").
function add(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 9) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
}

/** Creates the account; with a home, also points it there (where its ~/.ssh lives on the node). */
export function ensureSeedUser(home?: string): void {
  const u = SEED_USER;
  if (spawnSync('getent', ['group', u.group]).status !== 0) add('groupadd', ['-g', String(u.gid), u.group]);
  if (spawnSync('getent', ['passwd', u.name]).status !== 0) add('useradd', ['-u', String(u.uid), '-g', String(u.gid), '-M', '-d', home ?? '/nonexistent', '-c', u.gecos, u.name]);
  if (home) {
    execFileSync('usermod', ['-d', home, '-c', u.gecos, u.name]);
  }
}
