// The guest image requirements: one record per rule (RULES, at the end), each
// with a stable id, the doc line of its [requirements] key, its default level,
// what it needs probed in the guest, and a small check with a one-line message
// an admin or user can act on. The [requirements] schema, the guestfish probes
// and the checker version (verdicts.ts) are all derived from RULES, so a new
// rule is one record here (and test images that pass and fail it).
import type { Config } from '../config/schema.js';
import { FAMILY_OF, type Distro, type Family } from '../request/keys.js';
import { quote } from '../config/values.js';
import type { GuestFacts } from './guestfs.js';

export type Level = 'error' | 'warn' | 'off';

/**
 * Facts the guestfs session gathers for the rules that name them (guestfs.ts):
 * inspection: libguestfs's OS inspection (always done: it finds what to mount);
 * dpkg: whether dpkg lists cloud-init as installed; cloudinit-module: the
 * cloudinit Python package; cloud-cfg: cloud.cfg and cloud.cfg.d/*.cfg;
 * useradd: /etc/default/useradd; opt-listing: what /opt holds; vrdma: VrdmaFacts;
 * group-file: /etc/group's entries (GroupFile); boot: the kernel and initrd a
 * direct boot would use and the root= for it (BootFacts), read in the same
 * appliance, which the prologue also has download them (verdicts.ts keeps them).
 */
export type FactGroup = 'inspection' | 'dpkg' | 'cloudinit-module' | 'cloud-cfg' | 'useradd' | 'opt-listing' | 'vrdma' | 'group-file' | 'boot';

/** What a rule needs looked at in the guest. exists and dirs land in GuestFacts.exists under the path. */
export interface Probes {
  /** Paths asked with guestfish exists (any kind of file). */
  readonly exists?: readonly string[];
  /** Paths asked with is-dir: a file of that name is no directory. */
  readonly dirs?: readonly string[];
  readonly facts?: readonly FactGroup[];
}

/** HyV's paravirtual guest driver (github.com/zrlio/hyv guest/virtio_hyv/Kbuild). */
export const HYV_DRIVER = 'virtio_hyv';
/** HyV's guest providers, one per host NIC kind: mlx4, cxgb4, SoftiWARP (guest/provider/{mlx4,cxgb4,siw2}/Kbuild). */
export const HYV_PROVIDERS = ['virtmlx4_ib', 'virtiw_cxgb4', 'virtsiw2'] as const;

export interface RuleResult {
  id: RuleId;
  ok: boolean;
  /** What was found, for the table; the failure sentence when !ok. */
  message: string;
  fix?: string;
  level: Level;
}

export interface Expectation {
  distro: Distro | null;
  arch: string;
  /** The job asks for vRDMA; absent when there is no job (check --image). */
  vrdma?: boolean;
  /**
   * The job's group as the node's NSS has it, which the seed makes the VM
   * user's primary group; absent when there is no job (check --image, check
   * --job, the submit filter): only the prologue knows it for certain.
   */
  group?: { name: string; gid: number };
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

// Fails, for a job with vrdma=true only, when the kernel the image boots has no
// HyV guest driver and provider, or there is no libibverbs: vTorque's
// "guests must have the support for it also installed" (doc/guest-images.md).
// Kernel releases and library paths are filtered to plain characters when read; anything else (a foreign verdict) is quoted.
const plain = (s: string) => (/^[A-Za-z0-9._+~=\/-]{1,128}$/.test(s) ? s : quote(s, 60));
const vrdmaGuest: Check = (f, want) => {
  const asked = want.vrdma === true;
  if (f.osv) return pass('OSv: vRDMA is built into the OSv kernel (MIKELANGELO OSv, drivers/virtio-rdma.cc), which is not a file to look at; assumed present');
  const v = f.vrdma;
  if (!v) return asked ? fail('the verdict holds no vRDMA facts', 'verify the image again (delete its verdict)') : pass('not checked (no vRDMA facts)');
  const missing: string[] = [];
  if (!v.kernel) missing.push('no kernel modules under /lib/modules');
  else {
    if (!v.modules.includes(HYV_DRIVER)) missing.push(`no ${HYV_DRIVER} module in modules.dep of kernel ${plain(v.kernel)}`);
    if (!HYV_PROVIDERS.some((p) => v.modules.includes(p))) missing.push(`no HyV provider module (${HYV_PROVIDERS.slice(0, -1).join(', ')} or ${HYV_PROVIDERS.at(-1)}) for kernel ${plain(v.kernel)}`);
  }
  if (v.verbs.length === 0) missing.push('no libibverbs.so.1');
  const older = v.kernels.length > 1 ? ` (the newest of ${v.kernels.length} kernels)` : '';
  if (missing.length === 0) return pass(`HyV guest side: ${v.modules.map(plain).join(', ')} in kernel ${plain(v.kernel!)}${older}; ${plain(v.verbs[0]!)}`);
  const what = `has no vRDMA guest side: ${missing.join('; ')}${v.kernel ? older : ''}`;
  if (!asked) return pass(`${what}; only a job with vrdma=true is refused`);
  return fail(`${what}, but the job asks for vrdma=true`, `use an image with HyV's guest side (github.com/zrlio/hyv: ${HYV_DRIVER} and the provider for the site's RDMA NIC, built for the kernel the image boots, then depmod; and libibverbs), or drop vrdma=true`);
};

// Fails, for a job, when the image's /etc/group holds the job's gid under
// another name, or the job's group name with another gid; and, for any image,
// when /etc/group cannot be read whole. The seed makes the job's group in the
// VM with `groupadd -g GID NAME` (user-data.ts) and the VM user's primary
// group is NAME: a gid the image already uses would make the user a member of
// that group (adm 4, disk 6, wheel 10, sudo 27, shadow 42, docker, lxd, kvm:
// root in the VM, and root there is root against the NFS exports), and
// Debian's and RedHat's numbering differ, so no list of "privileged" gids is
// right for every image. What an image lets a gid do (its files, sudoers,
// udev and polkit rules) cannot be read from /etc/group either, so every
// other group of the image counts. The one match allowed is the image's own
// group of the same name and gid (users 100, say): the site gives the user
// that very group.
/** /etc/group is a few KiB; a bigger one is not read (guestfs.ts: its text comes back through us). */
export const GROUP_FILE_MAX = 1024 * 1024;
const guestGroup: Check = (f, want) => {
  if (f.osv) return pass('OSv: the seed makes no accounts');
  const g = f.groupFile;
  if (!g) return fail('has no /etc/group', 'give the image an /etc/group (every Linux distribution has one)');
  if (g.size > GROUP_FILE_MAX) return fail(`/etc/group is ${g.size} bytes, more than the ${GROUP_FILE_MAX} read`, 'keep the image\'s own groups in /etc/group and the site\'s in the directory (LDAP)');
  if (g.bad.length > 0) {
    return fail(`/etc/group line${g.bad.length > 1 ? 's' : ''} ${g.bad.slice(0, 5).join(', ')}${g.bad.length > 5 ? ', ...' : ''} ${g.bad.length > 1 ? 'are' : 'is'} not NAME:PASSWORD:GID:MEMBERS, so which gids the image uses is not known`, 'fix those lines of /etc/group in the image');
  }
  const job = want.group;
  if (!job) return pass(`${g.entries.length} groups in /etc/group; each job's group is checked against them when the job starts`);
  const name = quote(job.name, 40);
  const other = g.entries.find((e) => e.gid === job.gid && e.name !== job.name);
  if (other) {
    return fail(`has its own group ${quote(other.name, 40)} with gid ${job.gid}, the gid of the job's group ${name}: the VM user would be a member of ${quote(other.name, 40)} and get what the image grants it`,
      "(you) submit the job under another of your groups, or use another image; (admin) give the site's group a gid that no group of the image uses, or renumber that group in the image");
  }
  const renamed = g.entries.find((e) => e.name === job.name);
  if (renamed && renamed.gid !== job.gid) {
    return fail(`has its own group ${name} with gid ${renamed.gid}, not the job's gid ${job.gid}: the VM user would be in the image's group of that name, not in yours`,
      "(you) submit the job under another of your groups, or use another image; (admin) rename the site's group, or remove or renumber the image's");
  }
  return pass(renamed ? `the job's group ${name} (gid ${job.gid}) is the image's own` : `gid ${job.gid} and the name ${name} are free in the image`);
};

/**
 * Bootloaders a VM boots through when it has no kernel we can boot directly.
 * The VMs start from qemu's own BIOS (SeaBIOS; qemu.ts sets no firmware), so
 * only BIOS loaders count: GRUB (Debian's /boot/grub, RedHat's /boot/grub2)
 * and extlinux/syslinux, by the configuration they boot from. An EFI-only
 * loader (systemd-boot, a unified kernel image) would not start.
 */
/** A kernel or initrd larger than this is not taken out (it would be copied into the node's cache): 512 MiB. */
export const BOOT_FILE_MAX = 512 * 1024 * 1024;

export const LOADER_FILES = ['/boot/grub/grub.cfg', '/boot/grub2/grub.cfg', '/boot/extlinux/extlinux.conf', '/boot/syslinux/syslinux.cfg', '/extlinux.conf'] as const;

// Fails when the image has neither a kernel we can boot directly (the
// /vmlinuz and /initrd.img links, or the newest /boot/vmlinuz-VERSION with its
// initrd, and a root file system named by UUID or LVM name) nor a BIOS
// bootloader (LOADER_FILES): its VM would print nothing and never answer.
const bootable: Check = (f) => {
  if (f.osv) return pass('OSv boots from its own loader');
  if (!f.os) return fail('has no operating system to boot', 'fix os-family first');
  const b = f.boot;
  if (!b) return fail('the verdict holds no boot facts', 'verify the image again (delete its verdict)');
  if (b.kernel && b.root) return pass(`direct kernel boot: ${plain(b.kernel.vmlinuz)} and ${plain(b.kernel.initrd)}, root=${plain(b.root)}`);
  const loaders = LOADER_FILES.filter((p) => f.exists[p]);
  const big = b.tooLarge.length > 0 ? `; ${b.tooLarge.slice(0, 2).map(plain).join(', ')} over ${BOOT_FILE_MAX / 1048576} MiB` : '';
  const why = !b.kernel ? `no /vmlinuz with /initrd.img, and no /boot/vmlinuz-VERSION with its initrd${big}` : `its root file system ${plain(b.rootDevice)} has no UUID`;
  if (loaders.length > 0) return pass(`boots through its bootloader (${loaders.join(', ')}); no direct kernel boot: ${why}`);
  return fail(`has neither a kernel to boot directly (${why}) nor a BIOS bootloader (no ${LOADER_FILES.join(', ')})`,
    'install a kernel with its initramfs in the image (apt-get install linux-image-amd64, or dnf install kernel), so that /boot holds vmlinuz-VERSION and its initrd; or install GRUB for BIOS boot (grub-install /dev/sda, then update-grub)');
};

export interface GuestRule<Id extends string = string> {
  readonly id: Id;
  /** The doc line of its [requirements] key (config reference, prologue.ini). */
  readonly doc: string;
  /** Its level when the ini does not set one. */
  readonly level: Level;
  readonly probes: Probes;
  readonly check: Check;
}

const rule = <Id extends string>(id: Id, doc: string, probes: Probes, check: Check, level: Level = 'error'): GuestRule<Id> => ({ id, doc, level, probes, check });

/** Every guest rule, in the order of the [requirements] section and of the check table. */
export const RULES = [
  rule('os-family', 'the image is Debian/Ubuntu, RedHat/CentOS/Rocky/Alma/Fedora, or OSv', { facts: ['inspection'] }, osFamily),
  rule('distro-match', "the job's distro (or the default) is the family the image really holds", { facts: ['inspection'] }, distroMatch),
  rule('arch-match', "the image's architecture is the job's arch", { facts: ['inspection'] }, archMatch),
  rule('cloud-init-installed', 'cloud-init is installed (package database, or its binary and Python module)',
    { exists: ['/usr/bin/cloud-init', '/usr/mgmt/cloud-init.so'], facts: ['inspection', 'dpkg', 'cloudinit-module'] }, cloudInitInstalled),
  rule('cloud-init-enabled', '/etc/cloud/cloud-init.disabled does not exist', { exists: ['/etc/cloud/cloud-init.disabled'], facts: ['inspection'] }, cloudInitEnabled),
  rule('nocloud-enabled', 'the effective datasource_list (cloud.cfg, then cloud.cfg.d/*.cfg in order) includes NoCloud, or nothing restricts it',
    { facts: ['inspection', 'cloud-cfg'] }, nocloudEnabled),
  rule('workspace-dir', '/workspace is a directory', { dirs: ['/workspace'] }, workspaceDir),
  rule('home-default', 'homes are under /home (/etc/default/useradd HOME, and /home exists)', { dirs: ['/home'], facts: ['useradd'] }, homeDefault),
  rule('opt-unused', "/opt is empty or absent, because the cluster's /opt is mounted over it", { facts: ['opt-listing'] }, optUnused),
  rule('opt-vm-present', '/opt-vm exists, for software that would otherwise go to /opt', { dirs: ['/opt-vm'] }, optVmPresent),
  rule('vrdma-guest', `for a job with vrdma=true only: the kernel the image boots (its newest under /lib/modules) has HyV's guest driver ${HYV_DRIVER} and a HyV provider module (${HYV_PROVIDERS.join(', ').replace(/, ([^,]*)$/, ' or $1')}) in its modules.dep, and libibverbs.so.1 is installed; OSv images are assumed to have it built in`,
    { facts: ['inspection', 'vrdma'] }, vrdmaGuest),
  rule('guest-group', "the job's group can be made in the VM as the node has it: the image's /etc/group holds neither its gid under another name (the VM user would be a member of that group: disk, sudo, wheel, docker, ...) nor its name with another gid; the image's own group of the same name and gid is allowed",
    { facts: ['group-file'] }, guestGroup),
  rule('bootable', `a VM can start it: a kernel we boot directly (the /vmlinuz and /initrd.img links, or the newest /boot/vmlinuz-VERSION with its initrd, and a root file system with a UUID or an LVM name), or a BIOS bootloader (${LOADER_FILES.join(', ')}); OSv boots from its own loader`,
    { exists: LOADER_FILES, facts: ['inspection', 'boot'] }, bootable),
] as const;

export type RuleId = (typeof RULES)[number]['id'];
export const RULE_IDS: readonly RuleId[] = RULES.map((r) => r.id);

export function evaluateRules(f: GuestFacts, want: Expectation, config: Config): RuleResult[] {
  return RULES.map((r) => ({ id: r.id, level: config.requirements[r.id], ...r.check(f, want) }));
}
