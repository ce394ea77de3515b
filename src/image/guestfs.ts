// Looks inside images with libguestfs, read-only, with the format given: one
// appliance for any number of disks (a launch costs ~30 s under TCG), driven
// through `guestfish --listen` so later questions can depend on earlier
// answers. Everything read from a guest is untrusted data: it is returned as
// text for the rules to judge, never run, and escaped before anyone sees it.
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/schema.js';
import type { ResultPromise, execa as Execa } from 'execa';
import { loadExeca } from '../tools/execa.js';
import { killAtExit, killGroup } from '../tools/run.js';
import { NodeFault } from '../torque/exit.js';

export interface DiskInput {
  path: string;
  format: 'qcow2' | 'raw' | 'vmdk';
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
}

export interface Datasources {
  list?: string[];
  from?: string;
  errors: string[];
}

/** Paths whose existence the rules ask about. */
// /workspace, /home and /opt-vm are asked with is-dir below, not here: a file of that name is no directory.
export const PROBED = ['/usr/bin/cloud-init', '/etc/cloud/cloud-init.disabled', '/libenviron.so', '/tools/mount-fs.so', '/usr/mgmt/cloud-init.so'] as const;
const OSV_MARKERS = ['/libenviron.so', '/tools/mount-fs.so'];

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

  constructor(execa: typeof Execa, guestfish: string, args: string[], env: Record<string, string>, private readonly timeoutMs: number, signal?: AbortSignal) {
    this.child = execa(guestfish, args, {
      env: { LANG: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, extendEnv: false, cwd: '/',
      stdin: 'pipe', buffer: false, reject: false, detached: true, cancelSignal: signal, encoding: 'utf8',
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => { this.buf += d; this.waiter?.(); });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => { if (this.stderr.length < 4096) this.stderr += d; });
    // Whatever ends it (exit, our kill, the deadline's cancel, which signals
    // guestfish alone), nothing it started (the appliance) outlives it.
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
        throw new NodeFault('guestfish stopped', [{ id: 'guestfs', message: `guestfish stopped: ${this.stderr.split('\n').filter(Boolean).slice(0, 3).join(' | ') || 'no message'}`, fix: 'run libguestfs-test-tool on this node; with a broken /dev/kvm set [guestfs] accel = tcg' }]);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        this.kill();
        throw new NodeFault(`guestfish did not answer within ${Math.round(this.timeoutMs / 1000)} s`, [{ id: 'guestfs', message: `guestfish did not answer within ${Math.round(this.timeoutMs / 1000)} s (${cmds[0]})`, fix: 'check the node, or raise [timeouts] tool' }]);
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

function guestfsEnv(config: Config, accel: 'kvm' | 'tcg'): Record<string, string> {
  const env: Record<string, string> = { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_MEMSIZE: String(config.guestfs.memsize), HOME: '/root' };
  if (accel === 'tcg') env.LIBGUESTFS_BACKEND_SETTINGS = 'force_tcg';
  return env;
}

export async function gatherGuestFacts(disks: readonly DiskInput[], config: Config, opts: GuestfsOptions): Promise<GuestFacts[]> {
  const add = disks.flatMap((d) => [`--format=${d.format}`, '-a', d.path]);
  const { execa } = await loadExeca();
  const fish = new Fish(execa, config.tools.guestfish, ['--ro', ...add], guestfsEnv(config, opts.accel), config.timeouts.tool * 1000, opts.signal);
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
      out.push(root ? await linuxFacts(fish, root, onDisk) : await otherFacts(fish, fsList.filter(onDisk)));
    }
    return out;
  } finally {
    await fish.close().catch(() => fish.kill());
  }
}

function lines(s: string): string[] {
  return s.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

async function linuxFacts(fish: Fish, root: string, onDisk: (d: string) => boolean): Promise<GuestFacts> {
  const [type, distro, arch, major, product, mps] = await fish.ask([
    `-inspect-get-type ${root}`, `-inspect-get-distro ${root}`, `-inspect-get-arch ${root}`,
    `-inspect-get-major-version ${root}`, `-inspect-get-product-name ${root}`, `-inspect-get-mountpoints ${root}`,
  ]);
  // "mountpoint: device" pairs; mount the shortest paths first.
  // The root is mounted from the inspected device itself: identical copies of
  // one image share a filesystem label, and fstab's LABEL= would pick the first.
  const mounts = [['/', root], ...lines(mps!).map((l) => l.split(': ')).filter((p) => p.length === 2 && p[0] !== '/' && onDisk(p[1]!))]
    .sort((a, b) => a[0]!.length - b[0]!.length);
  await fish.ask(['-umount-all', ...mounts.map(([mp, dev]) => `-mount-ro ${dev} ${mp}`)]);
  const facts = await commonFacts(fish);
  facts.os = { type: type!.trim(), distro: distro!.trim(), arch: arch!.trim(), major: major!.trim(), product: product!.trim(), root };
  await fish.ask(['-umount-all']);
  return facts;
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

async function commonFacts(fish: Fish): Promise<GuestFacts> {
  const probes = PROBED.map((p) => `-exists ${p}`);
  const answers = await fish.ask([
    ...probes,
    '-is-dir /workspace', '-is-dir /home', '-is-dir /opt-vm', '-is-dir /opt', '-ls /opt',
    '-head-n 3000 /etc/cloud/cloud.cfg', '-glob-expand /etc/cloud/cloud.cfg.d/*.cfg',
    '-head-n 200 /etc/default/useradd', '-filesize /var/lib/dpkg/status',
    '-glob-expand /usr/lib/python3*/*-packages/cloudinit/__init__.py',
  ]);
  const exists: Record<string, boolean> = {};
  PROBED.forEach((p, i) => { exists[p] = answers[i]!.trim() === 'true'; });
  const a = answers.slice(PROBED.length);
  const [wsDir, homeDir, optVmDir, optDir, optLs, cloudCfg, cfgD, useradd, dpkgSize, pyMod] = a as string[];
  exists['/workspace'] = wsDir!.trim() === 'true';
  exists['/home'] = homeDir!.trim() === 'true';
  exists['/opt-vm'] = optVmDir!.trim() === 'true';
  const facts: GuestFacts = {
    osv: false,
    exists,
    cloudInitModule: lines(pyMod!).length > 0,
    cloudCfg: exists['/usr/bin/cloud-init'] || cloudCfg ? cloudCfg : undefined,
    cloudCfgD: [],
    useradd: useradd || undefined,
    optEntries: optDir!.trim() === 'true' ? lines(optLs!) : undefined,
    notes: [],
  };
  const size = Number(dpkgSize!.trim() || -1);
  if (size >= 0) facts.dpkgCloudInit = size < 64 * 1024 * 1024 && (await dpkgInstalled(fish));
  // cloud.cfg.d is read in sorted order: later files override earlier ones.
  const names = lines(cfgD!).filter((n) => /^\/etc\/cloud\/cloud\.cfg\.d\/[^/\s]+\.cfg$/.test(n)).sort().slice(0, 100);
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
