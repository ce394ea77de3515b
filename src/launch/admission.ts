// Admission: does this node have room for the VMs it must hold for a job,
// before any image is copied or any VM booted? Three answers: yes; never (the
// request is larger than what this node gives VMs at all, or than the job's
// own allocation: the job's fault, exit 1, with the limit named); not now
// (other VM jobs hold the room: NodeBusy, the job goes back to the queue and
// the node stays in service).
//
// judge() is plain arithmetic on typed values. What it is fed is read at the
// edges below: /proc/meminfo, the CPU count, statfs of the ramdisk, the job's
// cgroups (engine.jobCgroup), and what other jobs on this node hold: a
// reservation each running prologue writes under <job_dir>/.admission/
// (counted while that prologue lives), then its manifest under [paths]
// job_dir (counted while its qemu runs, or while it exists when [launch]
// start = false leaves the VMs to a launcher of the site's own).
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, statfsSync, unlinkSync } from 'node:fs';
import { cpus } from 'node:os';
import type { Config } from '../config/schema.js';
import { formatBytes } from '../config/values.js';
import type { BatchSystem } from '../core/engine.js';
import { JobFault, NodeBusy, NodeFault, isVtorqueError, type Problem } from '../core/errors.js';
import { ensureLayout, layoutOf } from '../cache/layout.js';
import { acquireLock, holderMaxSeconds } from '../cache/lock.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { readOwnedFile } from '../tools/safedir.js';
import { ensureJobDirRoot } from '../cache/jobdir.js';
import { readJobCgroup } from './cgroup.js';

/** What this node has. */
export interface Capacity {
  /** MemTotal, bytes. */
  memTotal: number;
  /** Online CPUs. */
  cores: number;
  /** The ramdisk's file system ([paths] ramdisk_dir): its size and what is free now, bytes. */
  ramdisk?: { size: number; free: number };
}

/** What the batch system gave this job on this node, where it says. */
export interface Allocation {
  memory?: { bytes: number; from: string };
  cpus?: { count: number; from: string };
}

/** What another job's VMs hold on this node. */
export interface Holding {
  jobId: string;
  /** RAM with qemu's overhead, bytes. */
  memory: number;
  vcpus: number;
  /** The most its ramdisk files may take (base copy plus the overlays' worst case), and what they take now. */
  ramdisk: { worst: number; used: number };
}

export interface AdmissionPolicy {
  /** [launch] reserve_memory: the host's share, never given to VMs. */
  reserveMemory: number;
  /** [launch] vm_memory_overhead: qemu's own memory per VM, on top of the guest's RAM. */
  vmOverhead: number;
  /** [launch] vcpus_per_core: vCPUs per core (or per allocated CPU) this node's VMs may have in all; 0: no limit. */
  vcpusPerCore: number;
  /** [cache] ramdisk_job_max: the most of the ramdisk one job may take, its overlays' worst case included. */
  ramdiskJobMax: number;
}

/** What the job asks of this node. */
export interface Demand {
  /** This node's VMs of the job. */
  vms: number;
  /** Per VM. */
  ram: number;
  vcpus: number;
  /** fs_type=ramdisk, once the base is known: the copy's allocated bytes and the image's virtual size. */
  ramdisk?: { base: number; virtualSize: number };
}

export type Admission =
  | { verdict: 'admit'; holds: Omit<Holding, 'jobId'> }
  | { verdict: 'never' | 'busy'; summary: string; problems: Problem[] };

const fmt = (n: number): string => formatBytes(Math.max(0, n));
const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

/**
 * The most one qcow2 overlay can grow to: the guest writes at most its disk's
 * virtual size, and qcow2 adds its L2 tables (8 bytes per 64 KiB cluster), its
 * refcounts (2 bytes per cluster) and a few header clusters. qemu enforces the
 * bound: a guest cannot write past the end of its disk, and only root (QMP)
 * could add snapshots. So counting this worst case caps the overlays for real,
 * with no quota or mount of our own.
 */
export function overlayWorst(virtualSize: number): number {
  return virtualSize + Math.ceil(virtualSize / 4096) + 2 * 1024 * 1024;
}

/** Each VM's seed medium sits beside its overlay (an ISO of a few hundred KiB; a FAT image of at least 1 MiB, twice its files). */
export const SEED_ROOM = 4 * 1024 * 1024;

/** The ramdisk a job may come to take: its base copy, and every VM's overlay at its worst and its seed. */
export function ramdiskWorst(base: number, virtualSize: number, vms: number): number {
  return base + vms * (overlayWorst(virtualSize) + SEED_ROOM);
}

/**
 * The verdict for one job on this node. Never before busy: a request that
 * cannot fit an empty node must not wait in the queue for room that never comes.
 */
export function judge(d: Demand, cap: Capacity, alloc: Allocation, others: readonly Holding[], p: AdmissionPolicy): Admission {
  const never: Problem[] = [];
  const busy: Problem[] = [];

  const perVm = d.ram + p.vmOverhead;
  const memory = d.vms * perVm;
  const gives = cap.memTotal - p.reserveMemory;
  const times = `${d.vms} VM${d.vms === 1 ? '' : 's'} x (${fmt(d.ram)} + ${fmt(p.vmOverhead)} for qemu) = ${fmt(memory)}`;
  if (memory > gives) {
    const most = Math.floor(gives / d.vms) - p.vmOverhead;
    never.push({
      id: 'node-memory', where: `ram=${fmt(d.ram)}`,
      message: `this node gives VMs at most ${fmt(gives)} of RAM (${fmt(cap.memTotal)} in all; [launch] reserve_memory keeps ${fmt(p.reserveMemory)} for the host); ${times}`,
      fix: most > 0 ? `ask for at most ${fmt(most)} of ram per VM with ${plural(d.vms, 'VM')} per node, or fewer VMs per node` : 'ask for fewer VMs per node, or run on a node with more memory',
    });
  } else if (alloc.memory && memory > alloc.memory.bytes) {
    never.push({
      id: 'job-memory', where: `ram=${fmt(d.ram)}`,
      message: `the job may use ${fmt(alloc.memory.bytes)} of memory on this node (${alloc.memory.from}); ${times}`,
      fix: `ask the batch system for at least ${fmt(memory)} of memory per node, or for less ram per VM`,
    });
  } else {
    const held = others.reduce((s, o) => s + o.memory, 0);
    if (memory > gives - held) {
      busy.push({
        id: 'node-memory-busy', where: `ram=${fmt(d.ram)}`,
        message: `other VM jobs hold ${fmt(held)} of the ${fmt(gives)} this node gives VMs (${others.filter((o) => o.memory > 0).map((o) => o.jobId).join(', ')}); ${times}`,
        fix: 'none needed: the job starts when a node has room',
      });
    }
  }

  const vcpus = d.vms * d.vcpus;
  if (p.vcpusPerCore > 0) {
    const nodeMost = cap.cores * p.vcpusPerCore;
    const vtimes = `${d.vms} VM${d.vms === 1 ? '' : 's'} x ${plural(d.vcpus, 'vCPU')} = ${vcpus}`;
    if (vcpus > nodeMost) {
      never.push({
        id: 'node-vcpus', where: `vcpus=${d.vcpus}`,
        message: `this node gives VMs at most ${nodeMost} vCPUs (${plural(cap.cores, 'core')} x [launch] vcpus_per_core ${p.vcpusPerCore}); ${vtimes}`,
        fix: `ask for at most ${Math.max(1, Math.floor(nodeMost / d.vms))} vcpus per VM with ${plural(d.vms, 'VM')} per node, or fewer VMs per node`,
      });
    } else if (alloc.cpus && vcpus > alloc.cpus.count * p.vcpusPerCore) {
      const most = alloc.cpus.count * p.vcpusPerCore;
      never.push({
        id: 'job-vcpus', where: `vcpus=${d.vcpus}`,
        message: `the job was given ${plural(alloc.cpus.count, 'CPU')} on this node (${alloc.cpus.from}), so its VMs may have ${most} vCPUs ([launch] vcpus_per_core ${p.vcpusPerCore}); ${vtimes}`,
        fix: `ask the batch system for at least ${Math.ceil(vcpus / p.vcpusPerCore)} CPUs per node, or for fewer vcpus`,
      });
    } else {
      const held = others.reduce((s, o) => s + o.vcpus, 0);
      if (vcpus > nodeMost - held) {
        busy.push({
          id: 'node-vcpus-busy', where: `vcpus=${d.vcpus}`,
          message: `other VM jobs hold ${held} of the ${nodeMost} vCPUs this node gives VMs; ${vtimes}`,
          fix: 'none needed: the job starts when a node has room',
        });
      }
    }
  }

  let ramdisk = { worst: 0, used: 0 };
  if (d.ramdisk) {
    const worst = ramdiskWorst(d.ramdisk.base, d.ramdisk.virtualSize, d.vms);
    ramdisk = { worst, used: 0 };
    const parts = `the base copy (${fmt(d.ramdisk.base)}) and ${plural(d.vms, 'overlay')} that may grow to the image's virtual size (${fmt(d.ramdisk.virtualSize)}), with their seeds: ${fmt(worst)}`;
    const fix = 'use an image with a smaller virtual disk, fewer VMs per node, or fs_type=sharedfs';
    if (worst > p.ramdiskJobMax) {
      never.push({ id: 'ramdisk-job-max', where: 'fs_type=ramdisk', message: `a job may take at most ${fmt(p.ramdiskJobMax)} of this node's ramdisk ([cache] ramdisk_job_max); ${parts}`, fix });
    } else if (!cap.ramdisk || worst > cap.ramdisk.size) {
      never.push({ id: 'ramdisk-size', where: 'fs_type=ramdisk', message: `this node's ramdisk holds ${fmt(cap.ramdisk?.size ?? 0)} in all; ${parts}`, fix });
    } else {
      // What the running jobs' files may still grow by is spoken for.
      const pending = others.reduce((s, o) => s + Math.max(0, o.ramdisk.worst - o.ramdisk.used), 0);
      if (worst > cap.ramdisk.free - pending) {
        busy.push({
          id: 'ramdisk-busy', where: 'fs_type=ramdisk',
          message: `the ramdisk has ${fmt(cap.ramdisk.free)} free, of which other jobs' overlays may still take ${fmt(pending)}; ${parts}`,
          fix: 'none needed: the job starts when a node has room',
        });
      }
    }
  }

  if (never.length > 0) return { verdict: 'never', summary: 'its VMs do not fit this node', problems: never };
  if (busy.length > 0) return { verdict: 'busy', summary: 'other VM jobs hold the room its VMs need', problems: busy };
  return { verdict: 'admit', holds: { memory, vcpus, ramdisk } };
}

export function policyOf(config: Config): AdmissionPolicy {
  return {
    reserveMemory: config.launch.reserve_memory,
    vmOverhead: config.launch.vm_memory_overhead,
    vcpusPerCore: config.launch.vcpus_per_core,
    ramdiskJobMax: config.cache.ramdisk_job_max,
  };
}

// ---- the edges ----

/** MemTotal from /proc/meminfo, bytes. */
export function memTotal(meminfo = readFileSync('/proc/meminfo', 'utf8')): number {
  const m = /^MemTotal:\s+([0-9]+) kB$/m.exec(meminfo);
  if (!m) throw new Error('/proc/meminfo has no MemTotal line');
  return Number(m[1]) * 1024;
}

/** CPUs in a cpuset list ("0-3,8,10-11"). */
export function cpuCount(list: string): number {
  let n = 0;
  for (const part of list.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(part);
    if (!m) return 0;
    n += m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

/** cgroup v1 memory.limit_in_bytes says "no limit" with a number near 2^63. */
const NO_LIMIT = 2 ** 60;

/** The job's own limits on this node: its cgroups (made by the batch system), then what the engine adds. */
export function allocationOf(engine: BatchSystem, jobId: string, uid: number): Allocation {
  const rel = engine.jobCgroup(jobId, uid);
  const out: Allocation = { ...engine.jobAllocation?.() };
  const mem = readJobCgroup(rel, 'memory.limit_in_bytes');
  if (mem && /^[0-9]+$/.test(mem.value) && Number(mem.value) < NO_LIMIT) {
    const bytes = Number(mem.value);
    if (!out.memory || bytes < out.memory.bytes) out.memory = { bytes, from: `${mem.dir}/memory.limit_in_bytes` };
  }
  const cpuset = readJobCgroup(rel, 'cpuset.cpus');
  const count = cpuset ? cpuCount(cpuset.value) : 0;
  if (cpuset && count > 0 && (!out.cpus || count < out.cpus.count)) out.cpus = { count, from: `${cpuset.dir}/cpuset.cpus` };
  return out;
}

export function capacityOf(config: Config, ramdisk: boolean): Capacity {
  const cap: Capacity = { memTotal: memTotal(), cores: cpus().length };
  if (ramdisk) {
    // Not made yet (the first ramdisk job makes it, and the directories above): the nearest existing one's file system is where it will be.
    for (let dir = config.paths.ramdisk_dir; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
      try {
        const fs = statfsSync(dir);
        cap.ramdisk = { size: fs.blocks * fs.bsize, free: fs.bavail * fs.bsize };
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || dir === '/') throw e;
      }
    }
  }
  return cap;
}

/** What a prologue reserves while it prepares its job: the manifest takes over once written. */
interface Reservation {
  version: 1;
  jobId: string;
  pid: number;
  /** /proc/<pid>/stat's start time: a pid reused by another process is not this prologue. */
  start: string;
  memory: number;
  vcpus: number;
  ramdiskWorst: number;
}

/** The part of a job's manifest.json admission reads (pipeline/prologue.ts Manifest). */
interface ManifestView {
  request?: { ram?: unknown; vcpus?: unknown; fs_type?: unknown };
  image?: { virtualSize?: unknown };
  base?: { ramdiskCopy?: unknown };
  vms?: { run?: { pid?: unknown } }[];
}

const processStart = (pid: number): string | undefined => {
  try {
    // Field 22, counted after the command's closing parenthesis (the command may hold blanks).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // A zombie (field 3, Z) has ended: its parent has not reaped it yet, and it holds nothing.
    return fields[0] === 'Z' ? undefined : fields[19];
  } catch {
    return undefined;
  }
};

// Beside the job directories whose manifests speak for a job once it is
// prepared: what this node's VM jobs hold is read from one place, [paths]
// job_dir ('.admission' is never a job id).
const admissionDir = (config: Config): string => `${config.paths.job_dir}/.admission`;
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);

/** Bytes allocated under a job's ramdisk directory (its base copy and vm-*\/ overlays), without following links. */
function allocatedUnder(dir: string, depth = 2): number {
  let n = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    const st = lstatSync(`${dir}/${name}`, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isFile()) n += st.blocks * 512;
    else if (st.isDirectory() && depth > 1) n += allocatedUnder(`${dir}/${name}`, depth - 1);
  }
  return n;
}

/** The JSON of a regular file of one of `owners` (at most 1 MiB), opened without following a link; undefined when absent, not theirs or not JSON. */
function readOwnJson(path: string, owners: readonly number[]): unknown {
  const text = readOwnedFile(path, owners, 1024 * 1024 + 1);
  if (text === undefined || text.length > 1024 * 1024) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const isQemu = (pid: unknown, qemu: string | undefined): boolean => {
  if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 1 || !qemu) return false;
  try {
    return readlinkSync(`/proc/${pid}/exe`) === qemu;
  } catch {
    return false;
  }
};

/**
 * What the other VM jobs on this node hold: each live prologue's reservation
 * (a dead one's file is removed), else each job's manifest while its VMs run.
 * `self` is left out, its earlier start's manifest too. `owners`: the uids a
 * manifest may belong to ([jobfiles] owner, root).
 */
export function holdingsOf(config: Config, engine: BatchSystem, self: string, owners: readonly number[]): Holding[] {
  const out = new Map<string, Holding>();
  const dir = admissionDir(config);
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    // none yet
  }
  for (const name of names) {
    const jobId = name.endsWith('.json') ? name.slice(0, -5) : '';
    if (!engine.isJobId(jobId) || jobId === self) continue;
    const r = readOwnJson(`${dir}/${name}`, [0]) as Partial<Reservation> | undefined;
    if (!r || typeof r.pid !== 'number' || processStart(r.pid) !== r.start) {
      rmSync(`${dir}/${name}`, { force: true }); // its prologue is gone: its manifest, if any, speaks for it now
      continue;
    }
    out.set(jobId, {
      jobId, memory: num(r.memory), vcpus: num(r.vcpus),
      ramdisk: { worst: num(r.ramdiskWorst), used: allocatedUnder(`${config.paths.ramdisk_dir}/${jobId}`) },
    });
  }
  let qemu: string | undefined;
  try {
    qemu = realpathSync(config.tools.qemu_system);
  } catch {
    qemu = undefined;
  }
  let jobs: string[] = [];
  try {
    jobs = readdirSync(config.paths.job_dir);
  } catch {
    // no job directory yet
  }
  for (const jobId of jobs) {
    if (!engine.isJobId(jobId) || jobId === self || out.has(jobId)) continue;
    const m = readOwnJson(`${config.paths.job_dir}/${jobId}/manifest.json`, owners) as ManifestView | undefined;
    if (!m || !Array.isArray(m.vms)) continue;
    // Its VMs hold the room while one of its qemus runs; with start = false, a launcher of the site's runs them while the files are there.
    const running = config.launch.start ? m.vms.filter((v) => isQemu(v?.run?.pid, qemu)).length : m.vms.length;
    if (running === 0) continue;
    const vms = m.vms.length;
    const ramdiskCopy = typeof m.base?.ramdiskCopy === 'string' ? m.base.ramdiskCopy : undefined;
    let base = 0;
    if (ramdiskCopy) base = (lstatSync(ramdiskCopy, { throwIfNoEntry: false })?.blocks ?? 0) * 512;
    out.set(jobId, {
      jobId,
      memory: vms * (num(m.request?.ram) + config.launch.vm_memory_overhead),
      vcpus: vms * num(m.request?.vcpus),
      ramdisk: m.request?.fs_type === 'ramdisk'
        ? { worst: ramdiskWorst(base, num(m.image?.virtualSize), vms), used: allocatedUnder(`${config.paths.ramdisk_dir}/${jobId}`) }
        : { worst: 0, used: 0 },
    });
  }
  return [...out.values()];
}

export interface AdmitInput {
  config: Config;
  engine: BatchSystem;
  jobId: string;
  /** The job owner's uid: the engine's cgroup path may name it. */
  uid: number;
  demand: Demand;
  /** Uids a running job's manifest may belong to. */
  manifestOwners: readonly number[];
  signal?: AbortSignal;
}

/**
 * Judges the job against this node and, when it fits, reserves its share
 * until its manifest speaks for it; one prologue at a time, so that two jobs
 * never both take the last room. Throws JobFault (never fits) or NodeBusy.
 */
export async function admit(o: AdmitInput): Promise<Omit<Holding, 'jobId'>> {
  const { config } = o;
  const l = layoutOf(config);
  ensureLayout(l);
  const dir = admissionDir(config);
  ensureJobDirRoot(config);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !lstatSync(dir).isDirectory()) throw e;
  }
  const release = await acquireLock('admission', { dir: l.locks, waitSeconds: holderMaxSeconds(config), staleSeconds: config.cache.lock_stale, signal: o.signal });
  try {
    const verdict = judge(o.demand, capacityOf(config, o.demand.ramdisk !== undefined), allocationOf(o.engine, o.jobId, o.uid), holdingsOf(config, o.engine, o.jobId, o.manifestOwners), policyOf(config));
    if (verdict.verdict !== 'admit') throw verdict.verdict === 'never' ? new JobFault(verdict.summary, verdict.problems) : new NodeBusy(verdict.summary, verdict.problems);
    const r: Reservation = {
      version: 1, jobId: o.jobId, pid: process.pid, start: processStart(process.pid) ?? '',
      memory: verdict.holds.memory, vcpus: verdict.holds.vcpus, ramdiskWorst: verdict.holds.ramdisk.worst,
    };
    writeFileAtomic(`${dir}/${o.jobId}.json`, JSON.stringify(r) + '\n', 0o600);
    return verdict.holds;
  } catch (e) {
    if (isVtorqueError(e)) throw e;
    const code = (e as NodeJS.ErrnoException).code ?? String((e as Error).message ?? e);
    throw new NodeFault(`cannot tell whether this node has room for the job (${code})`, [
      { id: 'admission', where: dir, message: String((e as Error).message ?? e).slice(0, 300), fix: 'check /proc/meminfo, [paths] job_dir and ramdisk_dir; run vtorque-prologue doctor' },
    ], { cause: e });
  } finally {
    await release().catch(() => undefined);
  }
}

/** Drops the job's reservation: its manifest speaks for it now, or it failed. */
export function releaseAdmission(config: Config, jobId: string): void {
  try {
    unlinkSync(`${admissionDir(config)}/${jobId}.json`);
  } catch {
    // none, or already gone
  }
}
