// The job owner's public keys, from the files [seed] ssh_keys_from names, read
// as the owner. A missing file is normal (no keys); anything odd is a note in
// the job output, never a failed job: keys are a convenience.
import type { Config } from '../config/schema.js';
import { controlCharIn } from '../config/values.js';
import type { Account } from './account.js';
import { readAsUser } from './user-files.js';

export const KEY_FILE_CAP = 64 * 1024;
const KEY = /^(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}(?: [^\n]*)?$/;

export async function sshKeysOf(config: Config, account: Account, signal?: AbortSignal): Promise<{ keys: string[]; notes: string[] }> {
  const keys: string[] = [];
  const notes: string[] = [];
  for (const pattern of config.seed.ssh_keys_from) {
    const path = pattern.replace(/^%h/, account.home.replace(/\/+$/, ''));
    // Only the owner looks at the path, missing files included: a root stat
    // would follow the user's symlinks with root's rights, and a hung NFS home
    // would block the prologue's event loop.
    const r = await readAsUser(config, path, account, KEY_FILE_CAP, signal);
    if (!r.ok) {
      if (!r.missing) notes.push(`SSH keys: ${path} ${r.why}; no keys were taken from it`);
      continue;
    }
    for (const raw of r.text.split('\n')) {
      const l = raw.trim();
      if (l === '' || l.startsWith('#')) continue;
      // Options (from=, command=) are sshd's business on the node; a VM gets the bare key lines only.
      if (controlCharIn(l) || !KEY.test(l)) continue;
      if (!keys.includes(l)) keys.push(l);
    }
  }
  return { keys: keys.slice(0, 100), notes };
}
