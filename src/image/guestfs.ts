// Looks inside images with libguestfs, read-only, with the format given: one
// appliance for any number of disks (a launch costs ~30 s under TCG), driven
// through `guestfish --listen` so later questions can depend on earlier
// answers. Everything read from a guest is untrusted data: it is returned as
// text for the rules to judge, never run, and escaped before anyone sees it.
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import type { ResultPromise, execa as Execa } from 'execa';
import { loadExeca } from '../tools/execa.js';
import { guardedArgv, killAtExit, killGroup } from '../tools/run.js';
import { NodeFault } from '../core/errors.js';
import { BOOT_FILE_MAX, GROUP_FILE_MAX, HYV_DRIVER, HYV_PROVIDERS, RULES, type FactGroup } from './rules.js';
import { guestfsEnv } from './accel.js';

export interface DiskInput {
  path: string;
  format: 'qcow2' | 'raw' | 'vmdk';
  /**
   * An empty root-owned directory (a path guestfish can be given: SAFE_PATH)
   * into which the same appliance downloads the kernel and initrd that
   * BootFacts names, as vmlinuz and initrd.img. Absent: nothing is downloaded.
   */
  bootTo?: string;
}

/** What a VM of the image boots directly; the rule bootable judges it with the bootloaders found (rules.ts). */
export interface BootFacts {
  /** Guest paths of the kernel and initrd a direct boot uses; absent: none found. */
  kernel?: { vmlinuz: string; initrd: string; /** Their sizes: a download that stopped short is not a kernel. */ bytes: [number, number] };
  /** root= for that kernel: UUID=... or a /dev/mapper name; absent when the root file system has neither. */
  root?: string;
  /** The inspected root device, for the message when it has no UUID. */
  rootDevice: string;
  /** Kernel and initrd files left out for their size (BOOT_FILE_MAX). */
  tooLarge: string[];
}

export interface GuestFacts {
  /** What libguestfs inspection says; undefined: no Linux OS found. */
  os?: { type: string; distro: string; arch: string; major: string; product: string; root: string };
  /** No Linux found, but OSv's own files are there. */
  osv: boolean;
  exists: Record<string, boolean>;
  /** dpkg status says cloud-init is installed; undefined when there is no dpkg database. */
  dpkgCloudInit?: boolean;
  cloudInitModule: boolean;
  cloudCfg?: string;
  cloudCfgD: { name: string; text: string }[];
  useradd?: string;
  /** Entries in /opt; undefined when /opt does not exist. */
  optEntries?: string[];
  /** Things that could not be read; reported, not fatal by themselves. */
  notes: string[];
  /** The effective datasource_list, worked out from cloudCfg and cloudCfgD when the verdict is made. */
  datasources?: Datasources;
  /** The HyV (vRDMA) guest side; undefined for OSv, whose kernel is not a file. */
  vrdma?: VrdmaFacts;
  /** /etc/group; undefined when there is none. */
  groupFile?: GroupFile;
  /** The kernel a direct boot uses; undefined for OSv and when no Linux was found. */
  boot?: BootFacts;
}

/** /etc/group as read from the guest: its size, and its entries unless it is over 1 MiB (then not read). */
export interface GroupFile {
  size: number;
  entries: { name: string; gid: number }[];
  /** Line numbers (from 1) that are neither an entry, a comment nor blank. */
  bad: number[];
}

/**
 * /etc/group's text as entries, strictly: "name:password:gid[:members]" with
 * a decimal gid. glibc reads some lines this does not (a gid with spaces): they
 * are reported as bad, never guessed at, so the rule fails rather than pass
 * over a gid it did not see.
 */
export function parseGroupFile(text: string, size: number): GroupFile {
  const entries: GroupFile['entries'] = [];
  const bad: number[] = [];
  text.split('\n').forEach((l, i) => {
    if (l.trim() === '' || l.startsWith('#')) return;
    const f = l.split(':');
    if (f.length >= 3 && f[0] !== '' && /^[0-9]{1,10}$/.test(f[2]!)) entries.push({ name: f[0]!, gid: Number(f[2]) });
    else bad.push(i + 1);
  });
  return { size, entries, bad };
}

/**
 * vTorque's vRDMA is HyV (github.com/zrlio/hyv): vTorque's libvirt fragment
 * gives the VM a virtio-hyv-pci device, which the guest drives with the
 * virtio_hyv module, plus a provider module for the host's RDMA NIC, and
 * programs reach it through libibverbs (hyv README, "In guest").
 */
export interface VrdmaFacts {
  /** Kernel releases with a modules.dep under /lib/modules. */
  kernels: string[];
  /** The newest of them, whose modules.dep was read. */
  kernel?: string;
  /** HyV guest modules that kernel's modules.dep lists and whose file is there. */
  modules: string[];
  /** libibverbs.so.1 files found. */
  verbs: string[];
}

// A kernel's modules.dep is well under 1 MiB; a bigger one is not read (grep output comes back through us).
const MODULES_DEP_MAX = 16 * 1024 * 1024;
// Names from the guest become guestfish arguments: nothing that could end a word or a line.
const KERNEL_RE = /^\/lib\/modules\/([A-Za-z0-9._+~-]{1,128})\/modules\.dep$/;
const MODULE_PATH_RE = /^[A-Za-z0-9._+\/-]{1,512}$/;
const VERBS_RE = /^\/usr\/lib(?:64)?\/(?:[A-Za-z0-9_.-]+\/)?libibverbs\.so\.1[0-9.]*$/;
/** Paths that go into a guestfish command as one word: no blank, quote or line break. Host paths (bootTo) and guest paths alike. */
export const SAFE_PATH = /^\/[A-Za-z0-9._\/+-]{0,1023}$/;
const BOOT_NAME = /^[A-Za-z0-9._+-]{1,255}$/;

export interface Datasources {
  list?: string[];
  from?: string;
  errors: string[];
}

// OSv has no inspection data; these files of its own mark it.
const OSV_MARKERS = ['/libenviron.so', '/tools/mount-fs.so'];
const union = (xs: readonly (readonly string[] | undefined)[]) => [...new Set(xs.flatMap((x) => x ?? []))];
/** Paths whose existence the rules ask about, and OSv's markers. */
export const PROBED: readonly string[] = union([...RULES.map((r) => r.probes.exists), OSV_MARKERS]);
/** Paths the rules ask to be directories. */
export const PROBED_DIRS: readonly string[] = union(RULES.map((r) => r.probes.dirs));
const FACTS: ReadonlySet<FactGroup> = new Set(RULES.flatMap((r) => r.probes.facts ?? []));
const wanted = (g: FactGroup) => FACTS.has(g);

export interface GuestfsOptions {
  accel: 'kvm' | 'tcg';
  signal?: AbortSignal;
}

/**
 * One guestfish process driven over its stdin, so later questions can depend
 * on earlier answers within a single appliance. After each command we ask
 * guestfish to echo a random marker; guest content cannot forge it.
 */
class Fish {
  readonly mark = `@@vt${randomBytes(6).toString('hex')}@@`;
  private buf = '';
  private stderr = '';
  private waiter?: () => void;
  private exited = false;
  private readonly child: ResultPromise;

  constructor(execa: typeof Execa, private readonly tool: string, args: string[], env: Record<string, string>, private readonly timeoutMs: number, boxMs: number, signal?: AbortSignal) {
    // Under the guards every tool has (tools/run.ts): it and its appliance die
    // with this process, however it dies, and on their own after boxMs.
    this.child = execa(...guardedArgv(tool, args, boxMs), {
      env: { LANG: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, extendEnv: false, cwd: '/',
      stdin: 'pipe', buffer: false, reject: false, cancelSignal: signal, encoding: 'utf8',
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => { this.buf += d; this.waiter?.(); });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => { if (this.stderr.length < 4096) this.stderr += d; });
    // Whatever ends it (exit, our kill, the deadline's cancel, which signals
    // its guard alone), nothing it started (the appliance) outlives it.
    const forget = killAtExit(this.child.pid);
    void this.child.then(() => { this.exited = true; this.kill(); forget(); this.waiter?.(); });
  }

  /** Runs commands in one round trip and returns each one's output. A leading '-' lets a command fail quietly. */
  async ask(cmds: string[]): Promise<string[]> {
    this.buf = '';
    const script = cmds.map((c) => `${c}\necho ${this.mark}\n`).join('');
    this.child.stdin!.write(script);
    const deadline = Date.now() + this.timeoutMs;
    const want = cmds.length;
    while (this.buf.split(`${this.mark}\n`).length - 1 < want) {
      if (this.exited) {
        throw new NodeFault('guestfish stopped', [{ id: 'guestfs', where: `[tools] guestfish (${this.tool})`, message: `guestfish stopped: ${this.stderr.split('\n').filter(Boolean).slice(0, 3).join(' | ') || 'no message'}`, fix: 'run libguestfs-test-tool on this node; with a broken /dev/kvm set [guestfs] accel = tcg' }]);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        this.kill();
        throw new NodeFault(`guestfish did not answer within ${Math.round(this.timeoutMs / 1000)} s`, [{ id: 'guestfs', where: `[tools] guestfish (${this.tool})`, message: `guestfish did not answer within ${Math.round(this.timeoutMs / 1000)} s (${cmds[0]})`, fix: 'check the node, or raise [timeouts] tool' }]);
      }
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiter = () => { clearTimeout(t); res(); };
      });
    }
    const parts = this.buf.split(`${this.mark}\n`);
    return cmds.map((_, i) => (parts[i] ?? '').replace(/\n$/, ''));
  }

  async close(): Promise<void> {
    if (!this.exited) {
      this.child.stdin!.end('exit\n');
      const t = setTimeout(() => this.kill(), 10_000);
      await this.child;
      clearTimeout(t);
    }
  }

  kill(): void {
    killGroup(this.child.pid, 'SIGKILL');
  }
}

export async function gatherGuestFacts(disks: readonly DiskInput[], config: Config, opts: GuestfsOptions): Promise<GuestFacts[]> {
  const add = disks.flatMap((d) => [`--format=${d.format}`, '-a', d.path]);
  const { execa } = await loadExeca();
  // The session's own time box: no run of ours lasts longer than [timeouts] total.
  const fish = new Fish(execa, config.tools.guestfish, ['--ro', ...add], guestfsEnv(config, opts.accel), config.timeouts.tool * 1000, config.timeouts.total * 1000, opts.signal);
  try {
    await fish.ask(['run']); // no '-': a failed launch must stop here and say why
    const [roots, fss, devices] = await fish.ask(['-inspect-os', '-list-filesystems', '-list-devices']);
    const devs = lines(devices!);
    if (devs.length !== disks.length) {
      throw new NodeFault('libguestfs could not start its appliance', [{ id: 'guestfs-launch', message: `the appliance saw ${devs.length} of ${disks.length} disks`, fix: 'run libguestfs-test-tool on this node' }]);
    }
    const rootList = lines(roots!);
    const fsList = lines(fss!).map((l) => l.split(':')[0]!.trim());
    const out: GuestFacts[] = [];
    for (const dev of devs) {
      const onDisk = (d: string) => d === dev || (d.startsWith(dev) && /^[0-9]+$/.test(d.slice(dev.length)));
      const root = rootList.find(onDisk);
      const bootTo = disks[devs.indexOf(dev)]!.bootTo;
      out.push(root ? await linuxFacts(fish, root, onDisk, bootTo) : await otherFacts(fish, fsList.filter(onDisk)));
    }
    return out;
  } finally {
    await fish.close().catch(() => fish.kill());
  }
}

function lines(s: string): string[] {
  return s.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

async function linuxFacts(fish: Fish, root: string, onDisk: (d: string) => boolean, bootTo?: string): Promise<GuestFacts> {
  const [type, distro, arch, major, product, mps] = await fish.ask([
    `-inspect-get-type ${root}`, `-inspect-get-distro ${root}`, `-inspect-get-arch ${root}`,
    `-inspect-get-major-version ${root}`, `-inspect-get-product-name ${root}`, `-inspect-get-mountpoints ${root}`,
  ]);
  // "mountpoint: device" pairs; mount the shortest paths first.
  // The root is mounted from the inspected device itself: identical copies of
  // one image share a filesystem label, and fstab's LABEL= would pick the first.
  await mountGuest(fish, root, mps!, onDisk);
  const facts = await commonFacts(fish);
  if (wanted('vrdma')) facts.vrdma = await vrdmaFacts(fish);
  if (wanted('boot')) facts.boot = await bootFacts(fish, root, bootTo);
  facts.os = { type: type!.trim(), distro: distro!.trim(), arch: arch!.trim(), major: major!.trim(), product: product!.trim(), root };
  await fish.ask(['-umount-all']);
  return facts;
}

/** Mounts the guest read-only as it mounts itself: its root, then its fstab's mountpoints on the same disk (/boot among them). */
async function mountGuest(fish: Fish, root: string, mountpoints: string, onDisk: (d: string) => boolean): Promise<void> {
  // "mountpoint: device" pairs; mount the shortest paths first.
  // The root is mounted from the inspected device itself: identical copies of
  // one image share a filesystem label, and fstab's LABEL= would pick the first.
  const mounts = [['/', root], ...lines(mountpoints).map((l) => l.split(': ')).filter((p) => p.length === 2 && p[0] !== '/' && onDisk(p[1]!))]
    .sort((a, b) => a[0]!.length - b[0]!.length);
  await fish.ask(['-umount-all', ...mounts.map(([mp, dev]) => `-mount-ro ${dev} ${mp}`)]);
}

/**
 * The kernel a direct boot uses, in this order: the /vmlinuz and /initrd.img
 * links Debian and Ubuntu keep to the newest kernel (also under /boot), then
 * the newest /boot/vmlinuz-VERSION with its initrd.img-VERSION or
 * initramfs-VERSION.img (RedHat). Links are resolved inside the guest
 * (realpath), /boot as the guest mounts it. With bootTo, the same appliance
 * downloads the two files there; one it cannot read is simply not there
 * afterwards, which the caller checks.
 */
async function bootFacts(fish: Fish, root: string, bootTo?: string): Promise<BootFacts> {
  const [uuid, ls, ...links] = await fish.ask([`-vfs-uuid ${root}`, '-ls /boot', '-realpath /vmlinuz', '-realpath /initrd.img', '-realpath /boot/vmlinuz', '-realpath /boot/initrd.img']);
  const u = uuid!.trim();
  const facts: BootFacts = { rootDevice: root, tooLarge: [] };
  if (/^[0-9A-Fa-f-]{8,64}$/.test(u)) facts.root = `UUID=${u}`;
  // Device-mapper names (LVM) are the same inside the guest; /dev/sdX are not (the guest sees vdX).
  else if (/^\/dev\/mapper\/[A-Za-z0-9._+-]+$/.test(root)) facts.root = root;
  const r = links.map((l) => l.trim());
  const names = lines(ls!).filter((n) => BOOT_NAME.test(n));
  const versioned = names.map((n) => /^vmlinuz-(.+)$/.exec(n)?.[1]).filter((v): v is string => v !== undefined && !v.includes('rescue'))
    .map((v) => ({ v, initrd: [`initrd.img-${v}`, `initramfs-${v}.img`].find((i) => names.includes(i)) }))
    .filter((k): k is { v: string; initrd: string } => k.initrd !== undefined)
    .sort((a, b) => compareKernels(b.v, a.v)).slice(0, 3)
    .map((k) => [`/boot/vmlinuz-${k.v}`, `/boot/${k.initrd}`] as const);
  const pairs = [[r[0]!, r[1]!], [r[2]!, r[3]!], ...versioned]
    .filter(([k, i]) => SAFE_PATH.test(k) && SAFE_PATH.test(i) && !`${k}/${i}`.split('/').includes('..'));
  if (pairs.length === 0) return facts;
  const files = [...new Set(pairs.flat())];
  const sizes = await fish.ask(files.flatMap((p) => [`-is-file ${p}`, `-filesize ${p}`]));
  const ok = new Map(files.map((p, i) => {
    const isFile = sizes[2 * i]!.trim() === 'true';
    const size = /^[0-9]+$/.test(sizes[2 * i + 1]!.trim()) ? Number(sizes[2 * i + 1]!.trim()) : -1;
    if (isFile && size > BOOT_FILE_MAX) facts.tooLarge.push(p);
    return [p, isFile && size > 0 && size <= BOOT_FILE_MAX ? size : 0] as const;
  }));
  const pick = pairs.find(([k, i]) => ok.get(k) && ok.get(i));
  if (!pick) return facts;
  facts.kernel = { vmlinuz: pick[0], initrd: pick[1], bytes: [ok.get(pick[0])!, ok.get(pick[1])!] };
  if (bootTo && facts.root && SAFE_PATH.test(bootTo)) await fish.ask([`-download ${pick[0]} ${bootTo}/vmlinuz`, `-download ${pick[1]} ${bootTo}/initrd.img`]);
  return facts;
}

/** Kernel versions in the order of their numbers (5.10 before 6.1); what the boot loaders start by default is the newest. */
function compareKernels(a: string, b: string): number {
  const x = newestKernel([a, b]);
  return a === b ? 0 : x === a ? 1 : -1;
}

async function otherFacts(fish: Fish, filesystems: string[]): Promise<GuestFacts> {
  // No Linux: OSv keeps its files on the first filesystem of the disk.
  for (const fs of filesystems) {
    await fish.ask(['-umount-all', `-mount-ro ${fs} /`]);
    const facts = await commonFacts(fish);
    await fish.ask(['-umount-all']);
    if (OSV_MARKERS.some((m) => facts.exists[m])) return { ...facts, osv: true };
  }
  return { osv: false, exists: {}, cloudInitModule: false, cloudCfgD: [], notes: filesystems.length ? [] : ['no filesystem found'] };
}

/** Sends named commands in one round trip; the answers come back under the same names. */
async function askNamed(fish: Fish, cmds: readonly (readonly [string, string])[]): Promise<Map<string, string>> {
  const answers = await fish.ask(cmds.map(([, c]) => c));
  return new Map(cmds.map(([name], i) => [name, answers[i] ?? '']));
}

async function commonFacts(fish: Fish): Promise<GuestFacts> {
  const cmds: (readonly [string, string])[] = [
    ...PROBED.map((p) => [`exists ${p}`, `-exists ${p}`] as const),
    ...PROBED_DIRS.map((p) => [`dir ${p}`, `-is-dir ${p}`] as const),
  ];
  if (wanted('opt-listing')) cmds.push(['optDir', '-is-dir /opt'], ['optLs', '-ls /opt']);
  if (wanted('cloud-cfg')) cmds.push(['cloudCfg', '-head-n 3000 /etc/cloud/cloud.cfg'], ['cfgD', '-glob-expand /etc/cloud/cloud.cfg.d/*.cfg']);
  if (wanted('useradd')) cmds.push(['useradd', '-head-n 200 /etc/default/useradd']);
  if (wanted('dpkg')) cmds.push(['dpkgSize', '-filesize /var/lib/dpkg/status']);
  if (wanted('cloudinit-module')) cmds.push(['pyMod', '-glob-expand /usr/lib/python3*/*-packages/cloudinit/__init__.py']);
  if (wanted('group-file')) cmds.push(['groupSize', '-filesize /etc/group']);
  const a = await askNamed(fish, cmds);
  const get = (name: string) => a.get(name) ?? '';
  const exists: Record<string, boolean> = {};
  for (const p of PROBED) exists[p] = get(`exists ${p}`).trim() === 'true';
  for (const p of PROBED_DIRS) exists[p] = get(`dir ${p}`).trim() === 'true';
  const cloudCfg = get('cloudCfg');
  const useradd = get('useradd');
  const facts: GuestFacts = {
    osv: false,
    exists,
    cloudInitModule: lines(get('pyMod')).length > 0,
    cloudCfg: exists['/usr/bin/cloud-init'] || cloudCfg ? cloudCfg : undefined,
    cloudCfgD: [],
    useradd: useradd || undefined,
    optEntries: get('optDir').trim() === 'true' ? lines(get('optLs')) : undefined,
    notes: [],
  };
  const groupSize = /^[0-9]+$/.test(get('groupSize').trim()) ? Number(get('groupSize').trim()) : -1;
  if (groupSize >= 0) {
    const [text] = groupSize <= GROUP_FILE_MAX ? await fish.ask(['-cat /etc/group']) : [''];
    facts.groupFile = groupSize <= GROUP_FILE_MAX ? parseGroupFile(text ?? '', groupSize) : { size: groupSize, entries: [], bad: [] };
  }
  const size = Number(get('dpkgSize').trim() || -1);
  if (wanted('dpkg') && size >= 0) facts.dpkgCloudInit = size < 64 * 1024 * 1024 && (await dpkgInstalled(fish));
  // cloud.cfg.d is read in sorted order: later files override earlier ones.
  const names = lines(get('cfgD')).filter((n) => /^\/etc\/cloud\/cloud\.cfg\.d\/[^/\s]+\.cfg$/.test(n)).sort().slice(0, 100);
  if (names.length > 0) {
    const texts = await fish.ask(names.map((n) => `-head-n 3000 ${n}`));
    facts.cloudCfgD = names.map((name, i) => ({ name, text: texts[i] ?? '' }));
  }
  return facts;
}

/** The stanza for cloud-init must say "install ok installed"; a removed package leaves its stanza behind. */
async function dpkgInstalled(fish: Fish): Promise<boolean> {
  const [status] = await fish.ask(['-cat /var/lib/dpkg/status']);
  const stanza = (status ?? '').split(/\n\n+/).find((st) => /^Package:\s+cloud-init\s*$/m.test(st)) ?? '';
  return /^Status:\s+install ok installed\s*$/m.test(stanza);
}

/** Kernel releases in version order, last the newest: what Debian's and RHEL's boot loaders start by default. */
export function newestKernel(releases: readonly string[]): string | undefined {
  const key = (r: string) => r.split(/[^0-9]+/).filter((x) => x !== '').map(Number);
  const cmp = (a: string, b: string) => {
    const ka = key(a), kb = key(b);
    for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
      const d = (ka[i] ?? -1) - (kb[i] ?? -1);
      if (d !== 0) return d;
    }
    return a < b ? -1 : a > b ? 1 : 0;
  };
  return [...releases].sort(cmp).pop();
}

/** Kernel releases from the glob of each kernel's modules.dep under /lib/modules; a name that could split a guestfish word or line is dropped. */
export function kernelReleases(globOutput: string): string[] {
  return lines(globOutput).map((p) => KERNEL_RE.exec(p)?.[1]).filter((k): k is string => k !== undefined).slice(0, 64);
}

/** The module file of the first modules.dep line grep found, if it is a plain relative or absolute path without "..". */
export function moduleFileFrom(grepOutput: string): string | undefined {
  return lines(grepOutput).map((l) => l.slice(0, l.indexOf(':'))).find((p) => MODULE_PATH_RE.test(p) && !p.split('/').includes('..'));
}

/**
 * What modprobe and udev would find for HyV in the kernel the image boots:
 * modules.dep, because a module depmod did not list is never loaded, and the
 * files it names, because a stale entry loads nothing either.
 */
async function vrdmaFacts(fish: Fish): Promise<VrdmaFacts> {
  const [deps, ...verbGlobs] = await fish.ask([
    '-glob-expand /lib/modules/*/modules.dep',
    '-glob-expand /usr/lib/*/libibverbs.so.1*', '-glob-expand /usr/lib64/libibverbs.so.1*', '-glob-expand /usr/lib/libibverbs.so.1*',
  ]);
  const kernels = kernelReleases(deps!);
  const verbs = verbGlobs.flatMap((g) => lines(g)).filter((p) => VERBS_RE.test(p)).slice(0, 8);
  const kernel = newestKernel(kernels);
  const facts: VrdmaFacts = { kernels, kernel, modules: [], verbs };
  if (!kernel) return facts;
  const dir = `/lib/modules/${kernel}`;
  const [size] = await fish.ask([`-filesize ${dir}/modules.dep`]);
  const n = Number(size!.trim() || -1);
  if (!(n > 0 && n <= MODULES_DEP_MAX)) return facts;
  // One basic regex per module, without | or quotes, so guestfish passes each as one plain word.
  const names = [HYV_DRIVER, ...HYV_PROVIDERS];
  const hits = await fish.ask(names.map((m) => `-grep ^[^:]*/${m}[.]ko[.a-z]*: ${dir}/modules.dep`));
  const listed = names.map((m, i) => ({ m, path: moduleFileFrom(hits[i]!) })).filter((x): x is { m: string; path: string } => x.path !== undefined);
  if (listed.length === 0) return facts;
  // realpath resolves inside the guest, so RHEL's weak-updates links (absolute, into another kernel's tree) count; it fails for a dangling one.
  const there = await fish.ask(listed.map((x) => `-realpath ${x.path.startsWith('/') ? x.path : `${dir}/${x.path}`}`));
  facts.modules = listed.filter((_, i) => there[i]!.trim() !== '').map((x) => x.m);
  return facts;
}
