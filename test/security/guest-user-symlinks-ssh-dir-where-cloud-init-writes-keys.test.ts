// Issue 21 item 5: with [seed] nfs_home, the VM user's home is their real NFS
// home, mounted (cc_mounts) before cloud-init makes the user and writes keys.
// cloud-init writes users[].ssh_authorized_keys as root, by path
// (ssh_util.setup_user_keys): 22.4's extract_authorized_keys refuses a
// symlinked ~/.ssh, then falls back to ~/.ssh/authorized_keys and writes it
// through the symlink anyway. A user who made ~/.ssh a symlink to /root/.ssh
// gets their key into root's authorized_keys, and Debian's sshd lets root in
// by key (PermitRootLogin prohibit-password). The seed now never hands
// cloud-init a user's keys: write_files puts them in root's
// /etc/ssh/authorized_keys/<user>, and an sshd drop-in (read first, through a
// bootcmd Include) names that file for AuthorizedKeysFile. The final stage's
// ssh_authkey_fingerprints module would still make ~/.ssh and
// ~/.ssh/authorized_keys as root where they are missing (check_create_path,
// symlink checks first and writes after: a race on an NFS home), so the seed
// switches it off (no_ssh_fingerprints).
//
// Shown with cloud-init's own modules (cloudinit.config.cc_*), run as its
// init stage runs them, as root in a private mount namespace on this host.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { buildUserData } from '../../src/seed/user-data.js';
import { toYaml } from '../../src/seed/render.js';
import { agentConfig } from '../../src/seed/agent.js';

const USER = { user: 'vtkeys', uid: 64992, group: 'vtkeysg', gid: 64993 };
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHZ0a2V5c3VzZXJzb3duX2tleV9mb3JfdGhlX3Rlc3Q user@laptop';
const ROOT_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHJvb3RzX293bl9hZG1pbl9rZXlfZm9yX3RoZV90ZXN0 admin@site';
const config = parseConfig('[seed]\nnfs_home = head:/export/home/%u\n', 'x').config;

/** Debian 12's /etc/ssh/sshd_config (openssh-server 1:9.2p1-2), the lines that matter here. */
const DEBIAN_SSHD_CONFIG = [
  '# This is the sshd server system-wide configuration file.',
  'Include /etc/ssh/sshd_config.d/*.conf',
  '#PermitRootLogin prohibit-password',
  '#AuthorizedKeysFile\t.ssh/authorized_keys .ssh/authorized_keys2',
  'KbdInteractiveAuthentication no',
  'UsePAM yes',
  'Subsystem\tsftp\t/usr/lib/openssh/sftp-server',
  '',
].join('\n');
/** RHEL 8's: no Include at all, and its own AuthorizedKeysFile. */
const RHEL8_SSHD_CONFIG = 'HostKey /etc/ssh/ssh_host_ed25519_key\nSyslogFacility AUTHPRIV\nAuthorizedKeysFile\t.ssh/authorized_keys\nUsePAM yes\n';

/**
 * The job's user-data as the seed builds it, YAML as the seed writes it.
 * `old`: the keys back in users[0].ssh_authorized_keys, as the seed had them;
 * `fingerprints`: only no_ssh_fingerprints taken out.
 */
async function userData(variant: 'new' | 'old' | 'fingerprints' = 'new'): Promise<string> {
  const old = variant === 'old';
  const account = { ...USER, gecos: '', home: `/home/${USER.user}` };
  const agent = agentConfig({ account, vars: [], guest: { script: [], nodefile: [], np: [] }, vms: ['vnode'], vcpus: 1 });
  const data = buildUserData({ config, family: 'debian', hostname: 'vnode', account, sshKeys: [KEY], profile: '', agent });
  if (old) {
    (data.users as Record<string, unknown>[])[0]!.ssh_authorized_keys = [KEY];
    data.write_files = (data.write_files as { path: string }[]).filter((f) => !f.path.startsWith('/etc/ssh/'));
    data.bootcmd = (data.bootcmd as string[][]).filter((c) => c.includes('groupadd'));
  }
  if (variant !== 'new') delete data.no_ssh_fingerprints;
  return `#cloud-config\n${await toYaml(data)}`;
}

// cloud-init's modules that touch users, files and keys, in the order of
// Debian's cloud.cfg (init stage: bootcmd, write_files, [mounts: the NFS home,
// made beforehand here], users_groups, ssh; final stage:
// ssh_authkey_fingerprints), each as cloud-init runs it: a
// failed module logged and the next one run. The cloud object gives only what
// these modules ask of a datasource (NoCloud with no public-keys in meta-data).
const CLOUD_INIT = `
import json, logging, os, stat, sys, yaml
from cloudinit import distros, helpers
from cloudinit.config import cc_bootcmd, cc_write_files, cc_users_groups, cc_ssh, cc_ssh_authkey_fingerprints
load = lambda: yaml.safe_load(open(sys.argv[1]).read())
distro = distros.fetch('debian')('debian', {}, helpers.Paths({'cloud_dir': '/var/lib/cloud'}))
class DataSource:
    def publish_host_keys(self, keys): pass
class Cloud:
    def __init__(self): self.distro = distro; self.datasource = DataSource()
    def get_instance_id(self): return 'iid-vtorque-test'
    def get_public_ssh_keys(self): return []
def tree(top):
    out = {}
    for d, dirs, files in os.walk(top):
        for n in sorted(dirs + files):
            p = os.path.join(d, n); st = os.lstat(p)
            out[p] = {'uid': st.st_uid, 'mode': oct(stat.S_IMODE(st.st_mode)), 'link': os.readlink(p) if stat.S_ISLNK(st.st_mode) else None,
                      'text': open(p).read() if stat.S_ISREG(st.st_mode) else None}
    return out
before = {'home': tree('/home'), 'root': tree('/root')}
out = {}
# One config per stage, as each stage is a process of its own (cloud-init init, cloud-init modules --mode final).
init, final = load(), load()
for name, mod, cfg in (('bootcmd', cc_bootcmd, init), ('write_files', cc_write_files, init), ('users_groups', cc_users_groups, init), ('ssh', cc_ssh, init), ('ssh_authkey_fingerprints', cc_ssh_authkey_fingerprints, final)):
    try:
        mod.handle(name, cfg, Cloud(), logging.getLogger('vt'), [])
        out[name] = 'ok'
    except Exception as e:
        out[name] = 'failed: ' + str(e)[:300]
out['before'] = before
out['home'] = tree('/home')
out['root'] = tree('/root')
out['etc_ssh'] = {p: v for p, v in tree('/etc/ssh').items() if 'ssh_host_' not in p}
out['user'] = [l for l in open('/etc/passwd').read().splitlines() if l.startswith(sys.argv[2] + ':')]
print(json.dumps(out))
`;

type Node = { uid: number; mode: string; link: string | null; text: string | null };
interface GuestRun {
  bootcmd: string; write_files: string; users_groups: string; ssh: string; ssh_authkey_fingerprints: string;
  before: { home: Record<string, Node>; root: Record<string, Node> };
  home: Record<string, Node>; root: Record<string, Node>; etc_ssh: Record<string, Node>;
  user: string[];
}

/**
 * Runs the modules as root in a private mount namespace: /etc is a copy of
 * this host's with `sshd` as the image's sshd_config; /home, /root, /run,
 * /var/lib, /var/log and /var/mail are empty tmpfs. /root/.ssh holds root's
 * key; /home/vtkeys is the user's NFS home as mounted, and in it `plant`
 * (as the user): ~/.ssh -> /root/.ssh, ~/.ssh a directory of the user's, or nothing.
 */
function inGuest(userDataText: string, sshd: string | undefined, plant: 'symlink' | 'own-dir' | 'empty'): GuestRun {
  const work = mkdtempSync(join(tmpdir(), 'vtorque-guest-keys-'));
  chmodSync(work, 0o700);
  try {
    execFileSync('cp', ['-a', '/etc', join(work, 'etc')]);
    mkdirSync(join(work, 'etc/ssh'), { recursive: true });
    rmSync(join(work, 'etc/ssh/sshd_config.d'), { recursive: true, force: true });
    if (sshd !== undefined) writeFileSync(join(work, 'etc/ssh/sshd_config'), sshd);
    else rmSync(join(work, 'etc/ssh/sshd_config'), { force: true });
    writeFileSync(join(work, 'user-data'), userDataText);
    const asUser = `setpriv --reuid=${USER.uid} --regid=${USER.gid} --clear-groups`;
    const setup = [
      'set -e',
      `mount --bind ${work}/etc /etc`,
      'for d in /home /root /run /var/lib /var/log /var/mail; do mount -t tmpfs tmpfs "$d"; done',
      'chmod 0700 /root; mkdir -m 0700 /root/.ssh',
      `printf '%s\\n' '${ROOT_KEY}' > /root/.ssh/authorized_keys; chmod 0600 /root/.ssh/authorized_keys`,
      // The NFS home, as cc_mounts leaves it: the user's directory, with what they put there on the cluster.
      `mkdir -m 0755 /home/${USER.user}; chown ${USER.uid}:${USER.gid} /home/${USER.user}`,
      plant === 'empty' ? ':' : plant === 'symlink'
        ? `${asUser} ln -s /root/.ssh /home/${USER.user}/.ssh`
        : `${asUser} sh -c 'mkdir -m 0700 /home/${USER.user}/.ssh && echo "# mine" > /home/${USER.user}/.ssh/authorized_keys && chmod 0600 /home/${USER.user}/.ssh/authorized_keys'`,
      'exec /usr/bin/python3 -c "$1" "$2" "$3"',
    ].join('\n');
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', setup, 'sh', CLOUD_INIT, join(work, 'user-data'), USER.user], {
      encoding: 'utf8', timeout: 300_000, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
    });
    if (r.status !== 0) throw new Error(`cloud-init's modules did not run: ${r.status} ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as GuestRun;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const rootKeys = (g: GuestRun) => g.root['/root/.ssh/authorized_keys']?.text ?? '';

t.test("the premise, through cloud-init's own modules: the old seed's keys land in root's authorized_keys through ~/.ssh -> /root/.ssh", async (t) => {
  const g = inGuest(await userData('old'), DEBIAN_SSHD_CONFIG, 'symlink');
  t.equal(g.users_groups, 'ok');
  t.equal(g.user.length, 1, 'the VM user was made');
  t.match(rootKeys(g), KEY, "the user's key is in root's authorized_keys: root login by the user's key");
  t.match(rootKeys(g), ROOT_KEY);
});

t.test("our seed through cloud-init's own modules: nothing is written through the symlink; the key is in root's file under /etc/ssh", async (t) => {
  const g = inGuest(await userData(), DEBIAN_SSHD_CONFIG, 'symlink');
  for (const m of ['bootcmd', 'write_files', 'users_groups', 'ssh', 'ssh_authkey_fingerprints'] as const) t.equal(g[m], 'ok', `${m} ran`);
  t.equal(g.user.length, 1, 'the VM user was made');
  t.notMatch(rootKeys(g), KEY, "root's authorized_keys does not hold the user's key");
  t.same(g.root, g.before.root, "nothing under /root changed");
  t.same(g.home, g.before.home, 'nothing in the home changed: ~/.ssh is still the user\'s symlink, and nothing was made beside it');
  t.same(g.etc_ssh[`/etc/ssh/authorized_keys/${USER.user}`], { uid: 0, mode: '0o644', link: null, text: `${KEY}\n` }, 'the key is in root\'s file, readable for sshd acting as the user');
  t.match(g.etc_ssh['/etc/ssh/authorized_keys'], { uid: 0, mode: '0o755', link: null }, 'in a directory of root\'s');
  t.match(g.etc_ssh['/etc/ssh/sshd_config.d/00-vtorque-keys.conf'], { uid: 0, mode: '0o644', text: /^AuthorizedKeysFile \/etc\/ssh\/authorized_keys\/%u \.ssh\/authorized_keys$/m }, 'the drop-in names it first');
  t.match(g.etc_ssh['/etc/ssh/sshd_config']!.text, /^Include \/etc\/ssh\/sshd_config\.d\/00-vtorque-keys\.conf\n# This is the sshd server/, "sshd_config reads the drop-in before anything of the image's");
});

t.test("our seed: a ~/.ssh directory of the user's is left exactly as it was", async (t) => {
  const old = inGuest(await userData('old'), DEBIAN_SSHD_CONFIG, 'own-dir');
  t.match(old.home[`/home/${USER.user}/.ssh/authorized_keys`]!.text, KEY, 'the old seed had root write the key into the NFS home');
  const g = inGuest(await userData(), DEBIAN_SSHD_CONFIG, 'own-dir');
  t.same(g.home, g.before.home, 'the new one writes nothing there');
  t.equal(g.home[`/home/${USER.user}/.ssh/authorized_keys`]!.text, '# mine\n');
});

t.test("ssh_authkey_fingerprints, as root, makes ~/.ssh in the home; our seed switches it off", async (t) => {
  const on = inGuest(await userData('fingerprints'), DEBIAN_SSHD_CONFIG, 'empty');
  t.equal(on.ssh_authkey_fingerprints, 'ok');
  t.same(on.before.home, { [`/home/${USER.user}`]: { uid: USER.uid, mode: '0o755', link: null, text: null } });
  t.match(on.home, {
    [`/home/${USER.user}/.ssh`]: { uid: USER.uid, mode: '0o700' },
    [`/home/${USER.user}/.ssh/authorized_keys`]: { uid: USER.uid, mode: '0o600', text: '' },
  }, 'with it on, root made ~/.ssh and ~/.ssh/authorized_keys in the NFS home');
  const off = inGuest(await userData(), DEBIAN_SSHD_CONFIG, 'empty');
  t.equal(off.ssh_authkey_fingerprints, 'ok');
  t.same(off.home, off.before.home, 'with our seed the home stays empty');
});

t.test("the bootcmd Include: first line of any image's sshd_config, once, also where the image has no Include (RHEL 8)", async (t) => {
  const rhel = inGuest(await userData(), RHEL8_SSHD_CONFIG, 'own-dir');
  t.equal(rhel.bootcmd, 'ok');
  t.equal(rhel.etc_ssh['/etc/ssh/sshd_config']!.text, `Include /etc/ssh/sshd_config.d/00-vtorque-keys.conf\n${RHEL8_SSHD_CONFIG}`, "above the image's own AuthorizedKeysFile, which sshd would otherwise take (first value wins)");
  const again = inGuest(await userData(), `Include /etc/ssh/sshd_config.d/00-vtorque-keys.conf\n${RHEL8_SSHD_CONFIG}`, 'own-dir');
  t.equal(again.etc_ssh['/etc/ssh/sshd_config']!.text, `Include /etc/ssh/sshd_config.d/00-vtorque-keys.conf\n${RHEL8_SSHD_CONFIG}`, 'a second boot adds nothing');
  const empty = inGuest(await userData(), '', 'own-dir');
  t.equal(empty.etc_ssh['/etc/ssh/sshd_config']!.text, 'Include /etc/ssh/sshd_config.d/00-vtorque-keys.conf\n', 'an empty sshd_config gets the line too');
  const none = inGuest(await userData(), undefined, 'own-dir');
  t.equal(none.bootcmd, 'ok', 'no sshd in the image: nothing to do, and no failure');
  t.equal(none.etc_ssh['/etc/ssh/sshd_config'], undefined, 'and no sshd_config is made');
});
