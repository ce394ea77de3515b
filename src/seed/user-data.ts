// user-data for Debian- and RedHat-family guests: one #cloud-config mapping
// built as data. Only the keys below are ever emitted (the tests hold us to
// that, because cloud-init's schema check does not report unknown top-level keys).
// Every file's content goes in as base64 and every string is one line
// (render.ts toYaml refuses anything else): PyYAML reads U+0085, U+2028 and
// U+2029 as line breaks, the yaml package does not, so raw text in a block
// scalar could end it early and add keys.
import type { Config } from '../config/schema.js';
import type { Account } from './account.js';
import { agentRuncmd, agentWriteFiles, type AgentConfig } from './agent.js';
import { stagedUserFiles } from './guest-files.js';
import { PROFILE_PATH } from './profile.js';
import { guestKeyFiles } from './ssh-keys.js';
import type { UserCloudConfig } from './user-metadata.js';

export const USER_DATA_KEYS = [
  'hostname', 'preserve_hostname', 'manage_etc_hosts', 'disable_root', 'ssh_pwauth', 'no_ssh_fingerprints', 'bootcmd', 'users',
  'write_files', 'runcmd', 'mounts', 'manage_resolv_conf', 'resolv_conf', 'ntp', 'package_update', 'packages', 'timezone',
] as const;
type Key = (typeof USER_DATA_KEYS)[number];

export interface UserDataInput {
  config: Config;
  family: 'debian' | 'redhat';
  hostname: string;
  account: Account;
  gecos?: string;
  sshKeys: readonly string[];
  profile: string;
  user?: UserCloudConfig;
  /** The guest agent's config (agent.ts): every Linux guest gets the agent, which runs the job script. */
  agent: AgentConfig;
}

// nofail: a VM whose NFS server is away still boots, and the user sees why in the mount, not in a hung console.
const NFS_OPTS = 'nofail,_netdev';

export function nfsMounts(config: Config, user: string): string[][] {
  const s = config.seed;
  const m: string[][] = [];
  if (s.nfs_home) m.push([s.nfs_home.replace(/%u/g, user), `/home/${user}`, 'nfs', NFS_OPTS, '0', '0']);
  if (s.nfs_workspace) m.push([s.nfs_workspace, '/workspace', 'nfs', NFS_OPTS, '0', '0']);
  if (s.nfs_opt) m.push([s.nfs_opt, s.opt_target, 'nfs', NFS_OPTS, '0', '0']);
  return m;
}

export function buildUserData(i: UserDataInput): Partial<Record<Key, unknown>> {
  const { config, account: a } = i;
  const s = config.seed;
  const userFiles = stagedUserFiles(a.user, i.user?.files ?? []);
  // Never users[].ssh_authorized_keys: cloud-init writes those as root into the home (ssh-keys.ts).
  const keys = guestKeyFiles(a.user, i.sshKeys);
  const d: Partial<Record<Key, unknown>> = {
    hostname: i.hostname,
    preserve_hostname: false,
    manage_etc_hosts: true,
    disable_root: true,
    ssh_pwauth: false,
    // The final stage's ssh_authkey_fingerprints module calls cloud-init's
    // extract_authorized_keys for every user, as root: that makes ~/.ssh and
    // ~/.ssh/authorized_keys in the home when they are missing (check_create_path),
    // checking for symlinks first and writing after, a race the user can run
    // from the node on an NFS home. It only prints fingerprints; keep it off.
    no_ssh_fingerprints: true,
    // cloud-init cannot give a group a chosen gid. An argv list, not a shell
    // line; cloud-init-per makes it once per instance. No -o (non-unique): a
    // gid the image already uses is some group of the image's (disk, sudo,
    // wheel, docker, ...), and the VM user must not become its member. The
    // prologue refuses such a job first (rule guest-group, image/rules.ts);
    // should the image gain that gid anyway (the rule set to warn or off),
    // groupadd fails here, cloud-init's useradd --gid NAME then finds no
    // group NAME, and the VM user is not made at all.
    // The sshd Include goes first: cloud-init runs bootcmd as one sh script,
    // whose status, and so the module's, is then still groupadd's.
    bootcmd: [...keys.bootcmd, ['cloud-init-per', 'instance', 'vtorque-group', 'groupadd', '-g', String(a.gid), a.group]],
    users: [{
      name: a.user,
      uid: a.uid,
      primary_group: a.group,
      no_user_group: true,
      homedir: `/home/${a.user}`,
      shell: '/bin/bash',
      lock_passwd: true,
      ...(i.gecos !== undefined ? { gecos: i.gecos } : {}),
    }],
    write_files: [
      { path: PROFILE_PATH, content: Buffer.from(i.profile, 'utf8').toString('base64'), encoding: 'b64', owner: 'root:root', permissions: '0644' },
      ...keys.writeFiles,
      ...userFiles.writeFiles,
      ...agentWriteFiles(i.agent),
    ],
    // Only our fixed entries: the user's files copied into place as the user
    // (guest-files.ts), then the agent, so the script finds those files.
    runcmd: [...userFiles.runcmd, agentRuncmd()],
  };
  const mounts = nfsMounts(config, a.user);
  if (mounts.length > 0) d.mounts = mounts;
  // Debian-family cloud-init ignores resolv_conf; those guests get DNS through network-config.
  if (i.family === 'redhat' && s.nameservers.length > 0) {
    d.manage_resolv_conf = true;
    d.resolv_conf = { nameservers: [...s.nameservers], ...(s.search.length > 0 ? { searchdomains: [...s.search] } : {}) };
  }
  if (s.ntp_servers.length > 0) d.ntp = { enabled: true, servers: [...s.ntp_servers] };
  const packages = [...(i.family === 'debian' ? s.packages_debian : s.packages_redhat), ...(i.user?.packages ?? [])];
  if (packages.length > 0) {
    d.package_update = true;
    d.packages = [...new Set(packages)];
  }
  if (i.user?.timezone) d.timezone = i.user.timezone;
  return d;
}
