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

// Where the guest's sshd finds those keys. cloud-init's own key writing
// (users[].ssh_authorized_keys, ssh_util.setup_user_keys) writes as root, by
// path, into ~/.ssh/authorized_keys; with [seed] nfs_home that home is the
// user's real NFS home, mounted earlier in the same init stage, and a user who
// made ~/.ssh a symlink to /root/.ssh gets their key into root's
// authorized_keys (22.4's extract_authorized_keys refuses the symlinked path,
// then writes the default path through it anyway). So the seed never gives
// cloud-init a user's keys: write_files puts them in a root-owned file under
// /etc/ssh, which nothing of the user's is on the way to, and an sshd drop-in
// points AuthorizedKeysFile there first. ~/.ssh/authorized_keys stays second:
// sshd only READS it, and as the user, so whatever it points at is what the
// user could read anyway.

/** Root's directory of the VM users' keys in the guest: <dir>/<user>, root:root 0644 (sshd reads it as the user). */
export const GUEST_KEYS_DIR = '/etc/ssh/authorized_keys';
/** The sshd drop-in; 00- so that it comes before the image's and cloud-init's (50-cloud-init.conf): sshd keeps the first value it reads. */
export const SSHD_DROPIN = '/etc/ssh/sshd_config.d/00-vtorque-keys.conf';
export const SSHD_DROPIN_TEXT = [
  '# Written by vtorque-prologue\'s cloud-init seed. The VM user\'s keys are in a',
  `# root-owned file, ${GUEST_KEYS_DIR}/<user>, so that nothing run as root`,
  '# ever writes into the home (an NFS home is the user\'s to redirect).',
  `AuthorizedKeysFile ${GUEST_KEYS_DIR}/%u .ssh/authorized_keys`,
  '',
].join('\n');

/**
 * sh -c SSHD_INCLUDE, as root from bootcmd (init stage, before sshd starts:
 * cloud-init.service is ordered Before=sshd.service). Makes the image's
 * sshd_config read the drop-in first, whatever its own Include lines say or
 * where they stand: Debian 12, Ubuntu and RHEL 9 include sshd_config.d/*.conf
 * near the top, RHEL 8 has no Include at all, and a value set in sshd_config
 * above an Include would win. Fixed text, no value of the user's; run on every
 * boot, it adds the line once. No sshd_config (no sshd in the image): nothing to do.
 */
export const SSHD_INCLUDE = [
  'f=/etc/ssh/sshd_config',
  `line='Include ${SSHD_DROPIN}'`,
  '[ -f "$f" ] || exit 0',
  '[ "$(head -n 1 "$f")" = "$line" ] && exit 0',
  'if [ -s "$f" ]; then sed -i "1i $line" "$f"; else printf \'%s\\n\' "$line" > "$f"; fi',
].join('; ');

/** What the seed adds to user-data for SSH: the drop-in, the keys file (when there are keys), and the bootcmd entry that includes the drop-in. */
export function guestKeyFiles(user: string, keys: readonly string[]): { writeFiles: Record<string, unknown>[]; bootcmd: string[][] } {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  const writeFiles: Record<string, unknown>[] = [
    { path: SSHD_DROPIN, content: b64(SSHD_DROPIN_TEXT), encoding: 'b64', owner: 'root:root', permissions: '0644' },
  ];
  // user is checked (names.ts checkAccountName: no '/', not . or ..), so this is one entry in root's directory.
  if (keys.length > 0) {
    writeFiles.push({ path: `${GUEST_KEYS_DIR}/${user}`, content: b64(keys.map((k) => `${k}\n`).join('')), encoding: 'b64', owner: 'root:root', permissions: '0644' });
  }
  return { writeFiles, bootcmd: [['sh', '-c', SSHD_INCLUDE]] };
}
