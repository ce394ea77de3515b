// Admission's arithmetic (src/launch/admission.ts judge): never fits, fits but
// not now, fits; each limit named in its message. Plain values in, a verdict out.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isJobFault, isNodeBusy, type JobFault, type NodeBusy } from '../src/core/errors.js';
import { backingFor } from '../src/cache/overlays.js';
import type { CachedBase } from '../src/cache/acquire.js';
import { cpusOnNode } from '../src/slurm/contract.js';
import { qemuMemoryFault } from '../src/launch/qemu.js';
import { ToolError, runTool } from '../src/tools/run.js';
import { SEED_ROOM, cpuCount, judge, memTotal, overlayWorst, ramdiskWorst, type AdmissionPolicy, type Capacity, type Holding } from '../src/launch/admission.js';

const G = 1024 ** 3;
const M = 1024 ** 2;
const policy: AdmissionPolicy = { reserveMemory: 1 * G, vmOverhead: 256 * M, vcpusPerCore: 1, ramdiskJobMax: 16 * G };
// A node with 4.2 GiB: it gives VMs 3.2 GiB.
const node: Capacity = { memTotal: 4.2 * G, cores: 4, ramdisk: { size: 8 * G, free: 8 * G } };
const other = (jobId: string, h: Partial<Holding>): Holding => ({ jobId, memory: 0, vcpus: 0, ramdisk: { worst: 0, used: 0 }, ...h });

t.test('a request larger than the node never fits, and the message names the node\'s limit and the reserve', async (t) => {
  const v = judge({ vms: 1, ram: 4 * G, vcpus: 1 }, node, {}, [], policy);
  t.equal(v.verdict, 'never');
  if (v.verdict === 'admit') return;
  t.equal(v.problems[0]?.id, 'node-memory');
  t.match(v.problems[0]?.message, 'this node gives VMs at most 3.2 GiB of RAM (4.2 GiB in all; [launch] reserve_memory keeps 1.0 GiB for the host)');
  t.match(v.problems[0]?.message, '1 VM x (4.0 GiB + 256 MiB for qemu) = 4.3 GiB');
  t.match(v.problems[0]?.fix, 'ask for at most 2.9 GiB of ram per VM');
});

t.test('qemu\'s overhead counts: a VM of exactly what the node gives does not fit', async (t) => {
  t.equal(judge({ vms: 1, ram: 3.2 * G, vcpus: 1 }, node, {}, [], policy).verdict, 'never');
  t.equal(judge({ vms: 1, ram: 3.2 * G - 256 * M, vcpus: 1 }, node, {}, [], policy).verdict, 'admit');
});

t.test('VMs per node multiply', async (t) => {
  t.equal(judge({ vms: 2, ram: 1.5 * G, vcpus: 1 }, node, {}, [], policy).verdict, 'never');
  t.equal(judge({ vms: 2, ram: 1 * G, vcpus: 1 }, node, {}, [], policy).verdict, 'admit');
});

t.test("the job's own memory limit (its cgroup) is a limit that never grows: never fits", async (t) => {
  const v = judge({ vms: 1, ram: 2 * G, vcpus: 1 }, node, { memory: { bytes: 1 * G, from: '/sys/fs/cgroup/memory/torque/1.srv/memory.limit_in_bytes' } }, [], policy);
  t.equal(v.verdict, 'never');
  if (v.verdict === 'admit') return;
  t.equal(v.problems[0]?.id, 'job-memory');
  t.match(v.problems[0]?.message, 'the job may use 1.0 GiB of memory on this node (/sys/fs/cgroup/memory/torque/1.srv/memory.limit_in_bytes)');
});

t.test('other jobs holding the memory: busy, naming them, and never when it could not fit anyway', async (t) => {
  const busy = judge({ vms: 1, ram: 2 * G, vcpus: 1 }, node, {}, [other('7.srv', { memory: 2 * G })], policy);
  t.equal(busy.verdict, 'busy');
  if (busy.verdict === 'admit') return;
  t.equal(busy.problems[0]?.id, 'node-memory-busy');
  t.match(busy.problems[0]?.message, 'other VM jobs hold 2.0 GiB of the 3.2 GiB this node gives VMs (7.srv)');
  t.equal(judge({ vms: 1, ram: 4 * G, vcpus: 1 }, node, {}, [other('7.srv', { memory: 2 * G })], policy).verdict, 'never');
  t.equal(judge({ vms: 1, ram: 1 * G, vcpus: 1 }, node, {}, [other('7.srv', { memory: 1 * G })], policy).verdict, 'admit');
});

t.test('vCPUs: the node\'s cores times vcpus_per_core, the job\'s CPUs, the others; 0 turns it off', async (t) => {
  const never = judge({ vms: 1, ram: G, vcpus: 5 }, node, {}, [], policy);
  t.equal(never.verdict, 'never');
  if (never.verdict !== 'admit') t.match(never.problems[0]?.message, 'this node gives VMs at most 4 vCPUs (4 cores x [launch] vcpus_per_core 1)');
  t.equal(judge({ vms: 1, ram: G, vcpus: 5 }, node, {}, [], { ...policy, vcpusPerCore: 2 }).verdict, 'admit', 'overcommit 2: 8 vCPUs');
  t.equal(judge({ vms: 1, ram: G, vcpus: 500 }, node, {}, [], { ...policy, vcpusPerCore: 0 }).verdict, 'admit', '0: no vCPU check');
  const job = judge({ vms: 1, ram: G, vcpus: 3 }, node, { cpus: { count: 2, from: 'cpuset' } }, [], policy);
  t.equal(job.verdict, 'never');
  if (job.verdict !== 'admit') t.equal(job.problems[0]?.id, 'job-vcpus');
  const busy = judge({ vms: 1, ram: G, vcpus: 2 }, node, {}, [other('8.srv', { vcpus: 3 })], policy);
  t.equal(busy.verdict, 'busy');
  if (busy.verdict !== 'admit') t.equal(busy.problems[0]?.id, 'node-vcpus-busy');
});

t.test('ramdisk: the copy plus each overlay at its worst, against the per-job cap, the ramdisk and what running jobs may still take', async (t) => {
  const d = { vms: 2, ram: G, vcpus: 1, ramdisk: { base: 1 * G, virtualSize: 3 * G } };
  const worst = ramdiskWorst(G, 3 * G, 2);
  t.equal(worst, G + 2 * (overlayWorst(3 * G) + SEED_ROOM));
  t.ok(overlayWorst(3 * G) > 3 * G, 'qcow2 metadata on top of the virtual size');
  const capped = judge(d, node, {}, [], { ...policy, ramdiskJobMax: 4 * G });
  t.equal(capped.verdict, 'never');
  if (capped.verdict !== 'admit') {
    t.equal(capped.problems[0]?.id, 'ramdisk-job-max');
    t.match(capped.problems[0]?.message, 'a job may take at most 4.0 GiB of this node\'s ramdisk ([cache] ramdisk_job_max)');
    t.notMatch(capped.problems[0]?.fix, /\(admin\)|ramdisk_dir/, 'the fix is the user\'s');
  }
  t.equal(judge(d, { ...node, ramdisk: { size: 6 * G, free: 6 * G } }, {}, [], policy).verdict, 'never', 'larger than the ramdisk');
  t.equal(judge(d, node, {}, [], policy).verdict, 'admit');
  // Another job's overlays may still grow by 2 GiB: that room is spoken for.
  const busy = judge(d, node, {}, [other('9.srv', { ramdisk: { worst: 3 * G, used: 1 * G } })], policy);
  t.equal(busy.verdict, 'busy');
  if (busy.verdict !== 'admit') t.match(busy.problems[0]?.message, "other jobs' overlays may still take 2.0 GiB");
  t.equal(judge(d, node, {}, [other('9.srv', { ramdisk: { worst: G, used: G } })], policy).verdict, 'admit', 'a job at its worst already takes only what statfs shows');
});

t.test('the edges parse what the kernel writes', async (t) => {
  t.equal(memTotal('MemTotal:       24683772 kB\nMemFree:        19315092 kB\n'), 24683772 * 1024);
  t.throws(() => memTotal('MemFree: 1 kB\n'));
  t.equal(cpuCount('0-3,8,10-11'), 7);
  t.equal(cpuCount('5'), 1);
  t.equal(cpuCount(''), 0);
  t.equal(cpuCount('x'), 0);
});

t.test("qemu that cannot get the guest's memory is the job's fault, with qemu's words; another qemu failure is not", async (t) => {
  // Heuristic overcommit (vm.overcommit_memory 0) refuses a mapping larger than RAM and swap: more than any node here has.
  const dir = mkdtempSync(join(tmpdir(), 'vt-admit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const argv = ['-machine', 'q35,accel=tcg', '-m', String(1024 * 1024), '-nodefaults', '-display', 'none', '-S', '-daemonize', '-pidfile', join(dir, 'qemu.pid')];
  const e = await runTool('/usr/bin/qemu-system-x86_64', argv, { timeout: 60_000, toolKey: 'qemu_system' }).then(() => undefined, (x: unknown) => x);
  t.ok(e instanceof ToolError, 'qemu failed');
  const f = qemuMemoryFault(e, argv);
  t.ok(f && isJobFault(f), `a job fault: ${(e as Error)?.message}`);
  t.equal(f?.problems[0]?.id, 'vm-memory');
  t.equal(f?.problems[0]?.where, 'ram (qemu -m 1048576)');
  t.match(f?.problems[0]?.message, /Cannot allocate memory/);
  t.equal(f?.cause, e, 'the cause is kept');
  const other = await runTool('/usr/bin/qemu-system-x86_64', ['-machine', 'no-such-machine', '-display', 'none'], { timeout: 60_000, toolKey: 'qemu_system' }).then(() => undefined, (x: unknown) => x);
  t.ok(other instanceof ToolError);
  t.equal(qemuMemoryFault(other, []), undefined, 'stays what it was');
});

t.test("Slurm's SLURM_JOB_CPUS_PER_NODE: one count for all, else this node's place among the job's hosts", async (t) => {
  t.equal(cpusOnNode('2', [], undefined), 2);
  t.equal(cpusOnNode('2(x3)', ['a', 'b', 'c'], 'c'), 2);
  t.equal(cpusOnNode('4,2(x2)', ['a', 'b', 'c'], 'a'), 4);
  t.equal(cpusOnNode('4,2(x2)', ['a', 'b', 'c'], 'c'), 2);
  t.equal(cpusOnNode('4,2(x2)', ['a', 'b', 'c'], 'z'), undefined, 'a node not in the list: nothing said');
  t.equal(cpusOnNode('4;rm', ['a'], 'a'), undefined);
  t.equal(cpusOnNode(undefined, ['a'], 'a'), undefined);
  t.equal(cpusOnNode('0', ['a'], 'a'), undefined);
});

t.test("the ramdisk copy itself: larger than the ramdisk is the job's fault, no room now is a busy node; neither tells anyone to use sharedfs as the admin's fix", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vt-admit-rd-'));
  const shm = join(dir, 'shm');
  mkdirSync(shm, { mode: 0o755 });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4M,mode=0755', 'tmpfs', shm]);
  t.teardown(() => { spawnSync('umount', ['-l', shm]); rmSync(dir, { recursive: true, force: true }); });
  const base = (mib: number): CachedBase => {
    const path = join(dir, `base-${mib}.raw`);
    writeFileSync(path, Buffer.alloc(mib * M, 1));
    return { digest: '0'.repeat(64), path, format: 'raw', size: mib * M };
  };
  const owner = { uid: 0, gid: 0, fileMode: 0o600, dirMode: 0o700 };
  const job = (id: string) => {
    mkdirSync(join(shm, id), { mode: 0o700 });
    return { dir: join(dir, id), ramdisk: join(shm, id) };
  };
  const tooBig = (() => { try { backingFor({ base: base(8), dirs: job('1'), owner }); } catch (e) { return e; } })();
  t.ok(isJobFault(tooBig), 'an 8 MiB copy on a 4 MiB ramdisk: the job\'s fault');
  t.equal((tooBig as JobFault).problems[0]?.id, 'ramdisk-size');
  t.notMatch((tooBig as JobFault).problems[0]?.fix ?? '', /\(admin\)/);
  writeFileSync(join(shm, 'other'), Buffer.alloc(3 * M, 1));
  const busy = (() => { try { backingFor({ base: base(2), dirs: job('2'), owner }); } catch (e) { return e; } })();
  t.ok(isNodeBusy(busy), 'a 2 MiB copy beside 3 MiB of others on 4 MiB: busy');
  t.equal((busy as NodeBusy).problems[0]?.id, 'ramdisk-busy');
  t.notMatch((busy as NodeBusy).problems[0]?.fix ?? '', /sharedfs/);
  rmSync(join(shm, 'other'));
  t.equal(backingFor({ base: base(2), dirs: job('3'), owner }), join(shm, '3', 'base.raw'), 'with room, the copy is made');
});
