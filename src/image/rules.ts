// The guest image requirements, one small named function per rule, each with
// a stable id and a one-line message an admin or user can act on. Facts come
// from guestfs.ts; the request supplies what the job expects.
import type { Config } from '../config/schema.js';
import { FAMILY_OF, type Distro, type Family } from '../request/keys.js';
import { quote } from '../config/values.js';
import type { GuestFacts } from './guestfs.js';

export const RULE_IDS = [
  'os-family', 'distro-match', 'arch-match', 'cloud-init-installed', 'cloud-init-enabled',
  'nocloud-enabled', 'workspace-dir', 'home-default', 'opt-unused', 'opt-vm-present',
] as const;
export type RuleId = (typeof RULE_IDS)[number];

export interface RuleResult {
  id: RuleId;
  ok: boolean;
  /** What was found, for the table; the failure sentence when !ok. */
  message: string;
  fix?: string;
  level: 'error' | 'warn' | 'off';
}

export interface Expectation {
  distro: Distro | null;
  arch: string;
}

const INSPECTED_FAMILY: Record<string, Family> = {
  debian: 'debian', ubuntu: 'debian', linuxmint: 'debian',
  rhel: 'redhat', centos: 'redhat', rocky: 'redhat', almalinux: 'redhat', fedora: 'redhat', redhat: 'redhat', 'redhat-based': 'redhat', oraclelinux: 'redhat', scientificlinux: 'redhat',
};

/** The OS family the image really holds, or undefined. */
export function familyOf(f: GuestFacts): Family | undefined {
  if (f.os?.type === 'linux') return INSPECTED_FAMILY[f.os.distro];
  return f.osv ? 'osv' : undefined;
}

type Check = (f: GuestFacts, want: Expectation) => Omit<RuleResult, 'id' | 'level'>;

const pass = (message: string) => ({ ok: true, message });
const fail = (message: string, fix: string) => ({ ok: false, message, fix });

// Fails when inspection finds neither a supported Linux nor OSv.
const osFamily: Check = (f) => {
  const fam = familyOf(f);
  if (fam) return pass(fam === 'osv' ? 'OSv' : `${f.os!.distro} ${f.os!.major} (${fam} family)`);
  const seen = f.os ? `${quote(f.os.distro, 30)} (${quote(f.os.type, 20)})` : 'no operating system';
  return fail(`holds ${seen}; should be Debian, RedHat or OSv family`, 'build the image from a Debian, Ubuntu, RHEL-like or OSv base');
};

// Fails when the job's distro names another family than the image holds.
const distroMatch: Check = (f, want) => {
  const fam = familyOf(f);
  if (want.distro === null) return pass(`no distro requested; using what the image holds${fam ? ` (${fam})` : ''}`);
  if (!fam) return fail(`cannot tell whether it is ${want.distro}`, 'fix os-family first');
  if (FAMILY_OF[want.distro] === fam) return pass(`${want.distro} requested, ${fam} family found`);
  return fail(`holds the ${fam} family, but the job asks for distro=${want.distro}`, `set #VM distro= to match the image, or choose a ${FAMILY_OF[want.distro]} image`);
};

// Fails when the image's architecture differs from the job's arch.
const archMatch: Check = (f, want) => {
  if (!f.os) return pass('architecture not inspectable (OSv); assumed to match');
  const arch = f.os.arch;
  if (arch === want.arch) return pass(arch);
  return fail(`is ${quote(arch, 20)}; the job asks for arch=${want.arch}`, `use an ${want.arch} image, or set #VM arch=${arch} where the cluster supports it`);
};

// Fails when no package database lists cloud-init and its binary or Python module is missing.
const cloudInitInstalled: Check = (f) => {
  if (f.osv) return f.exists['/usr/mgmt/cloud-init.so'] ? pass('OSv cloud-init module /usr/mgmt/cloud-init.so') : fail('has no /usr/mgmt/cloud-init.so', "add OSv's cloud-init module to the image (capstan / osv-apps cloud-init)");
  if (f.dpkgCloudInit) return pass('dpkg lists cloud-init as installed');
  if (f.exists['/usr/bin/cloud-init'] && f.cloudInitModule) return pass('/usr/bin/cloud-init and its Python module are present');
  const missing = [!f.exists['/usr/bin/cloud-init'] && '/usr/bin/cloud-init', !f.cloudInitModule && 'the cloudinit Python module'].filter(Boolean).join(' and ');
  return fail(`has no cloud-init (${missing} missing${f.dpkgCloudInit === false ? ', and dpkg does not list it' : ''})`, 'install it: apt-get install cloud-init, or dnf install cloud-init');
};

// Fails when /etc/cloud/cloud-init.disabled exists.
const cloudInitEnabled: Check = (f) => {
  if (f.osv) return pass('OSv: no disable switch');
  if (f.exists['/etc/cloud/cloud-init.disabled']) return fail('has /etc/cloud/cloud-init.disabled, so cloud-init will not run', 'delete /etc/cloud/cloud-init.disabled from the image');
  return pass('not disabled');
};

// Fails when the effective datasource_list leaves NoCloud out.
const nocloudEnabled: Check = (f) => {
  if (f.osv) return pass('OSv cloud-init reads NoCloud seed media');
  if (!f.datasources) return fail('the verdict holds no datasource facts', 'verify the image again (delete its verdict)');
  const { list, from, errors } = f.datasources;
  if (errors.length > 0) return fail(errors[0]!, 'fix the YAML; cloud-init would fail on it too');
  if (list === undefined) return pass('no datasource_list restricts the datasources');
  if (list.some((d) => d.toLowerCase() === 'nocloud')) return pass(`datasource_list from ${from} includes NoCloud`);
  return fail(`datasource_list in ${from} is [${list.map((d) => quote(d, 20)).join(', ')}], without NoCloud`, `add NoCloud to datasource_list in ${from}`);
};

// Fails when /workspace is not a directory.
const workspaceDir: Check = (f) => (f.exists['/workspace'] ? pass('/workspace is a directory') : fail('has no /workspace directory', 'create /workspace in the image (mkdir /workspace)'));

// Fails when useradd puts homes elsewhere, or /home is missing.
const homeDefault: Check = (f) => {
  const m = /^\s*HOME\s*=\s*(\S*)\s*$/m.exec(f.useradd ?? '');
  const home = m?.[1]?.replace(/\/+$/, '');
  if (home !== undefined && home !== '/home') return fail(`/etc/default/useradd sets HOME=${quote(home, 40)}; homes should be under /home`, 'set HOME=/home in /etc/default/useradd');
  if (!f.exists['/home']) return fail('has no /home directory', 'create /home in the image');
  return pass('homes under /home');
};

// Fails when /opt holds anything: the cluster mounts its /opt over it.
const optUnused: Check = (f) => {
  const e = f.optEntries;
  if (e === undefined || e.length === 0) return pass(e === undefined ? '/opt absent' : '/opt empty');
  const shown = e.slice(0, 4).map((x) => quote(x, 30)).join(', ') + (e.length > 4 ? ', ...' : '');
  return fail(`/opt holds ${e.length} entr${e.length === 1 ? 'y' : 'ies'} (${shown}); should be empty, because the cluster mounts its /opt there`, 'install software under /opt-vm instead');
};

// Fails when /opt-vm is missing.
const optVmPresent: Check = (f) => (f.exists['/opt-vm'] ? pass('/opt-vm exists') : fail('has no /opt-vm directory', 'create /opt-vm and install software there instead of /opt'));

const CHECKS: Record<RuleId, Check> = {
  'os-family': osFamily,
  'distro-match': distroMatch,
  'arch-match': archMatch,
  'cloud-init-installed': cloudInitInstalled,
  'cloud-init-enabled': cloudInitEnabled,
  'nocloud-enabled': nocloudEnabled,
  'workspace-dir': workspaceDir,
  'home-default': homeDefault,
  'opt-unused': optUnused,
  'opt-vm-present': optVmPresent,
};

export function evaluateRules(f: GuestFacts, want: Expectation, config: Config): RuleResult[] {
  return RULE_IDS.map((id) => {
    const level = config.requirements[id];
    return { id, level, ...CHECKS[id](f, want) };
  });
}
