// The VM path of the prologue: request (and where the job's VMs go) ->
// authorised image -> verified and cached base -> overlays -> cloud-init seeds
// -> the VMs booted (qemu as the launch account, until each guest agent
// answers) -> manifest -> summary. Each stage takes a plain value and returns one.
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import type { BatchSystem, JobArgs, JobEnv } from '../core/engine.js';
import type { ScanResult } from '../request/directives.js';
import { EXIT_NODE_FAULT, EXIT_RUN, JobFault, NodeBusy, NodeFault, type ExitCode } from '../core/errors.js';
import type { HookIO } from '../core/io.js';
import type { VmRequest } from '../request/resolve.js';
import type { Placement, PlacedVm } from '../request/placement.js';
import { placement, requestFromAttributes, requestFromScript, type JobRequest } from './request.js';
import { authoriseImage } from '../image/authorise.js';
import { warnedRules, type ImageReport } from '../image/verdicts.js';
import { acquireImage, type Acquired, type CachedBase } from '../cache/acquire.js';
import { freshJobDirs, jobDirsOf, ownFile, removeJobDirs, resolveOwner, stopJobRun, type FileOwner, type JobDirs } from '../cache/jobdir.js';
import { layoutOf } from '../cache/layout.js';
import { removeLease } from '../cache/leases.js';
import { backingFor, overlayMaker, type Overlay } from '../cache/overlays.js';
import { jobAccount, seedShared, writeSeed, type SeedResult } from '../seed/index.js';
import { line } from '../report/user.js';
import { writeFileAtomic } from '../tools/atomic.js';
import { jobLogger, shortHostname, startDeadline, type JobContext } from './context.js';
import type { Logger } from '../report/log.js';
import { handleFailure } from './failure.js';
import { VERSION } from '../version.js';
import { JobEnded, assertNotEnded, clearEnded, jobEnded, watchEnded } from './ended.js';
import { lockJobFiles } from './job-lock.js';
import { bootFiles, grantLaunchRead } from '../launch/bootfiles.js';
import { joinJobCgroups } from '../launch/cgroup.js';
import {
  VmBootError, bootFault, confirmVms, consoleTail, guardBoot, handOverSockets, makeRunDir, makeTaps, qemuArgv, removeTaps, resolveLaunchAccount, runDirOf, runPathsOf, startVm, waitReady,
  type BootGuard,
  type LaunchAccel, type LaunchAccount,
} from '../launch/qemu.js';
import { launchAccel } from '../launch/kvm.js';
import { admit, releaseAdmission, type Demand } from '../launch/admission.js';
import { lstatSync } from 'node:fs';

export interface PrologueInput {
  args: JobArgs;
  env: JobEnv;
  engine: BatchSystem;
  config: Config;
  configWarnings: string[];
  /** undefined on a sister, which has no job script: the request then comes from the job's record. */
  scan: ScanResult | undefined;
  scriptPath: string;
  forcedByQueue: boolean;
  io: HookIO;
  /**
   * Runs once the job is prepared, after its summary lines, and never after a
   * refusal: the Slurm Prolog leaves those lines for its TaskProlog
   * (slurm/hook.ts). A Slurm job fault also exits 0, so the exit code alone
   * cannot tell the hook that the job directory is there. It must not throw:
   * the job is prepared, and a throw here would undo it.
   */
  prepared?: (log: Logger) => Promise<void>;
}

export interface Manifest {
  version: 1;
  vtorque: string;
  job: {
    id: string; user: string; group: string; name: string; queue: string;
    /** The job's hosts in the batch system's order, and every VM of the job (on every host), for the VM launcher's node file. */
    hosts: string[];
    vms: PlacedVm[];
  };
  node: string;
  /** This node's position in job.hosts. */
  position: number;
  createdAt: string;
  request: VmRequest;
  requestSource: JobRequest['source'];
  image: {
    name: string;
    path: string;
    sha256: string;
    format: string;
    virtualSize: number;
    family?: string;
    inspected?: { distro: string; arch: string; product: string };
    verdictFromCache: boolean;
  };
  /** The cached base every overlay is backed by. */
  base: CachedBase & { ingested: boolean; ramdiskCopy?: string };
  vms: {
    index: number; jobIndex: number; hostname: string; dir: string; overlay: string; format: 'qcow2'; backing: string; baseDigest: string;
    /** The NoCloud seed: the medium to attach (iso, vfat), or the overlay itself (inject); the NIC's MAC the guest's network-config expects. */
    seed: { media: SeedResult['media']; path: string; instanceId: string; network?: SeedResult['network'] };
    /** The VM's qemu: its pid, QMP socket (root's; the console is its ring "con": ringbuf-read) and the agent socket the job starter connects to. */
    run?: { pid: number; qmp: string; agent: string };
  }[];
  /** The accelerator the VMs run with, and why; absent with [launch] start = false. */
  accel?: { accel: LaunchAccel; how: string };
}

export async function prepareVmJob(input: PrologueInput): Promise<ExitCode> {
  const { args, config, io } = input;
  const log = jobLogger(config, args.kind, args.jobId, io);
  const t0 = performance.now();
  const deadline = startDeadline(config.timeouts.total, () => {
    log.child({ stage: 'deadline' }).fatal({ seconds: config.timeouts.total }, 'deadline passed and the run did not stop: exiting');
    io.err(line(`node ${shortHostname()} did not prepare job ${args.jobId} within ${config.timeouts.total} s; the job goes back to the queue`) + '\n');
    process.exit(EXIT_NODE_FAULT);
  });
  // qdel during the prologue: the epilogue's marker stops every tool within a second (src/pipeline/ended.ts).
  const ended = watchEnded(config, args.jobId, deadline.signal);
  const ctx: JobContext = { args, env: input.env, engine: input.engine, config, node: shortHostname(), log, io, signal: ended.signal };
  // After each thing the epilogue would have to remove: it wrote its marker before removing anything.
  const published = (where: string) => assertNotEnded(config, args.jobId, where);
  let launchAccountP: Promise<LaunchAccount> | undefined;
  try {
    const clog = log.child({ stage: 'config' });
    for (const w of input.configWarnings) clog.warn(w);
    const rlog = log.child({ stage: 'request' });
    const jr = input.scan ? await requestFromScript(ctx, input.scan, input.forcedByQueue) : await requestFromAttributes(ctx, input.forcedByQueue);
    if (!jr) {
      // Silent, as on Mother Superior (torque/hook.ts): the job's output is the job's; the admin log has it.
      log.info('not a VM job: no job script on this sister, and the job\'s variables ask for no VMs');
      return EXIT_RUN;
    }
    const resolved = jr.request;
    const place = placement(ctx, jr);
    rlog.info({ request: resolved, source: jr.source, position: place.position, hosts: place.hosts.length }, 'request resolved');
    published('starting');

    // Independent of the image: run them while it is prepared.
    const shared = seedShared();
    const ownerP = resolveOwner(config, ctx.signal);
    ownerP.catch(() => undefined);
    launchAccountP = config.launch.start ? resolveLaunchAccount(config, ctx.signal) : undefined;
    launchAccountP?.catch(() => undefined);
    jobAccount(shared, config, args.user, args.group, ctx.signal).catch(() => undefined);
    jr.crossCheck?.catch(() => undefined);
    // Before any copy or boot: whether this node has room for its VMs of the job (launch/admission.ts).
    const mine = place.vms.filter((v) => v.host === place.hosts[place.position]);
    const demand = { vms: mine.length, ram: resolved.ram, vcpus: resolved.vcpus };
    const admitted = async (more?: Partial<Demand>) => admit({
      config, engine: ctx.engine, jobId: args.jobId, demand: { ...demand, ...more }, signal: ctx.signal,
      uid: (await jobAccount(shared, config, args.user, args.group, ctx.signal)).uid, manifestOwners: [0, (await ownerP).uid],
    });
    await admitted();
    const acquired = await checkImage(ctx, resolved, shared);
    published('preparing its image');
    // The ramdisk's share once the base is known: its copy, and the overlays at their worst.
    if (resolved.fs_type === 'ramdisk') await admitted({ ramdisk: { base: lstatSync(acquired.base.path).blocks * 512, virtualSize: acquired.report.verdict.format.virtualSize } });
    const report = acquired.report;
    if (report.family === 'osv') {
      throw new JobFault(`image ${report.image.name} is an OSv unikernel: OSv guests have no shell to run a job script in`, [
        { id: 'vm-osv', where: `img=${resolved.img}`, message: 'the VM launcher runs the job script with bash in VM 0, which OSv does not have', fix: 'use a Debian/Ubuntu or RedHat-family image' },
      ]);
    }
    // A job that named no distro for a non-default image gets the one the image holds.
    const request: VmRequest = resolved.distro === null && report.family
      ? Object.freeze({ ...resolved, family: report.family, sources: Object.freeze({ ...resolved.sources, distro: 'image' as const }) })
      : resolved;

    // Per VM: its overlay, then its seed; the VMs side by side, so one VM's
    // qemu-img runs while another's seed medium is made.
    const vlog = log.child({ stage: 'vms' });
    const owner = await ownerP;
    const launchAccount = await launchAccountP;
    const dirs = jobDirsOf(config, args.jobId, request.fs_type === 'ramdisk');
    // A requeued job's VMs from an earlier start go first: their disks are about to be made afresh.
    if (launchAccount && !(await stopJobRun(config, args.jobId, launchAccount, 0, ctx.signal)).cleared) throw runDirFault(dirs.dir);
    freshJobDirs(config, args.jobId, dirs, owner);
    published('making its job directory');
    const v0 = performance.now();
    const makeOverlay = overlayMaker({ config, base: acquired.base, dirs, owner, signal: ctx.signal }, backingFor({ base: acquired.base, dirs, owner }));
    const made = await Promise.all(mine.map(async (vm) => {
      const overlay = await makeOverlay(vm.index);
      const seed = await writeSeed({
        config, batch: ctx.engine, node: place.hosts[place.position]!, request, owner, shared, signal: ctx.signal,
        job: { id: args.jobId, user: args.user, group: args.group, name: args.jobName, workdir: input.env.workdir },
        vm: { index: vm.index, count: mine.length, jobIndex: vm.jobIndex }, vmHostnames: place.vms.map((v) => v.hostname),
        family: request.family ?? report.family ?? 'debian',
        dir: overlay.path.slice(0, overlay.path.lastIndexOf('/')),
        overlay: overlay.path,
      });
      return { overlay, seed };
    }));
    const overlays = made.map((m) => m.overlay);
    const seeds = made.map((m) => m.seed);
    vlog.info({ count: made.length, base: acquired.base.path, ramdisk: dirs.ramdisk, media: config.seed.media, instanceIds: seeds.map((x) => x.instanceId), ms: Math.round(performance.now() - v0) }, 'overlays and seeds made');
    for (const n of new Set(seeds.flatMap((x) => x.notes))) io.out(line(`note: ${n}`) + '\n');

    await jr.crossCheck;
    published('making its overlays and seeds');
    const booted = launchAccount ? await bootVms(ctx, { t0, dirs, request, acquired, overlays, seeds, mine, account: launchAccount, shared }) : undefined;
    if (booted) published('booting its VMs');
    const manifestPath = writeManifest(ctx, { ...jr, request }, place, acquired, dirs, overlays, seeds, owner, booted);
    // The last look: from here on only the epilogue removes what the job has.
    published('writing its manifest');
    releaseAdmission(config, args.jobId);
    log.child({ stage: 'manifest' }).info({ path: manifestPath, ms: Math.round(performance.now() - t0) }, 'job prepared');
    for (const l of [...summary(args.jobId, request, manifestPath, acquired, seeds), ...booted?.said ?? []]) io.out(line(l) + '\n');
    // Only now are the VMs the job's: a prologue that dies before this line leaves none behind.
    booted?.guard.keep();
    await input.prepared?.(log);
    return EXIT_RUN;
  } catch (e) {
    // Whatever failed after the epilogue ran (a tool stopped by the marker, a
    // file the epilogue removed under us) failed because the job is gone.
    const gone = e instanceof JobEnded || isEnded(config, args.jobId);
    // A job that does not start holds no image and leaves no half-made VM files;
    // a requeued one gets everything afresh at its next start.
    const release = gone ? await lockJobFiles(config, args.jobId) : undefined;
    try {
      const account = await launchAccountP?.catch(() => undefined);
      // No qemu of a failed job outlives it; run/ is emptied as the launch account before root removes the rest.
      const cleared = account ? (await stopJobRun(config, args.jobId, account, 0)).cleared : true;
      if (config.launch.network === 'bridge') await removeTaps(config, args.jobId);
      removeJobDirs(config, args.jobId, !cleared);
      removeLease(layoutOf(config), args.jobId);
      releaseAdmission(config, args.jobId);
      if (gone) clearEnded(config, args.jobId);
    } catch (ce) {
      log.child({ stage: 'cleanup' }).warn({ err: String((ce as Error).message) }, 'could not remove the job files after the failure');
    } finally {
      await release?.().catch(() => undefined);
    }
    if (gone) return jobGone(ctx, e);
    return await handleFailure(e, { kind: args.kind, engine: input.engine, args, env: input.env, config, io, log, source: input.scriptPath });
  } finally {
    ended.stop();
    deadline.stop();
  }
}

const isEnded = (config: Config, jobId: string): boolean => {
  try {
    return jobEnded(config, jobId);
  } catch {
    return false; // the marker directory itself failed: the original error says more
  }
};

/**
 * The job was deleted (qdel) while its node prepared it. Not the job's fault
 * nor the node's: no report is delivered (the batch system has no job to
 * deliver it to), the node stays online, and the exit code is the engine's
 * for a job that is gone (Torque: 1, so that pbs_mom's starter child does not
 * go on to start the job's shell; 2 would be a requeue).
 */
function jobGone(ctx: JobContext, e: unknown): ExitCode {
  ctx.log.child({ stage: 'ended' }).info({ err: e instanceof JobEnded ? undefined : String((e as Error)?.message ?? e), during: e instanceof JobEnded ? e.where : undefined },
    `the job was deleted (${ctx.engine.terms.deleteCommand}; its epilogue ran) while it was prepared: everything made for it is removed`);
  ctx.io.err(line(`job ${ctx.args.jobId} was deleted while this node prepared its VMs; everything made for it on ${ctx.node} is removed. Fix: nothing to fix; resubmit the job if it was deleted by mistake`) + '\n');
  return ctx.engine.exits.jobGone;
}

async function checkImage(ctx: JobContext, request: VmRequest, shared: ReturnType<typeof seedShared>): Promise<Acquired> {
  const ilog = ctx.log.child({ stage: 'image' });
  // The seed's lookup of the owner, already under way: NSS is asked once. A
  // user image must be theirs, and their group is judged against the image's
  // groups (rule guest-group): the seed makes it the VM user's primary group.
  const account = await jobAccount(shared, ctx.config, ctx.args.user, ctx.args.group, ctx.signal);
  const ownerUid = request.img.startsWith('/') && ctx.config.policy.allow_user_images ? account.uid : undefined;
  const img = await authoriseImage({ img: request.img, config: ctx.config, ownerUid });
  const t0 = performance.now();
  const want = { distro: request.distro, arch: request.arch, vrdma: request.vrdma, group: { name: account.group, gid: account.gid } };
  const a = await acquireImage({ config: ctx.config, img, want, job: ctx.args.jobId, node: ctx.node, runsHere: ctx.engine.runsHere, signal: ctx.signal, log: ilog });
  const r = a.report;
  ilog.info({ image: img.path, sha256: r.digest, base: a.base.path, ingested: a.ingested, verified: a.verified, fromCache: !a.verified, hashed: a.hashed, ms: Math.round(performance.now() - t0), rules: r.rules.filter((x) => !x.ok).map((x) => x.id) }, 'image ready');
  for (const w of warnedRules(r)) ctx.io.out(line(`warning: image ${img.name} fails ${w.id}: ${w.message}${w.fix ? `. Fix: ${w.fix}` : ''}`) + '\n');
  return a;
}

const runDirFault = (dir: string) => new NodeFault(`the VM files of an earlier start of this job cannot be removed (${dir}/run)`, [
  { id: 'job-dir', where: `${dir}/run`, message: 'the launch account\'s directory could not be emptied, or the job directory is not root\'s alone', fix: 'remove it by hand once no qemu of the job runs; run vtorque-prologue doctor' },
]);

interface Booted {
  accel: { accel: LaunchAccel; how: string };
  runs: NonNullable<Manifest['vms'][number]['run']>[];
  /** "VM X booted in N s": said after the job's summary, in the VMs' order, not in the order they came up. */
  said: string[];
  /** Stops the VMs if this process dies before it succeeded; kept (told so) at its last line. */
  guard: BootGuard;
}

/**
 * Boots this node's VMs side by side, as the launch account, and waits until
 * each guest agent answers ([launch] boot). A VM that does not come up fails
 * the job (its console tail says why); the caller's cleanup stops the others.
 */
async function bootVms(ctx: JobContext, o: {
  t0: number; dirs: JobDirs; request: VmRequest; acquired: Acquired; overlays: Overlay[]; seeds: SeedResult[]; mine: PlacedVm[]; account: LaunchAccount; shared: ReturnType<typeof seedShared>;
}): Promise<Booted> {
  const { config } = ctx;
  const blog = ctx.log.child({ stage: 'boot' });
  // qemu (the launch account) opens the base as the overlay's backing file.
  const privateTo = grantLaunchRead(o.acquired.base.path, o.account.gid);
  const [boot, jobOwner] = await Promise.all([
    bootFiles(config, o.acquired.base, o.acquired.report.verdict, { name: o.acquired.report.image.name, privateTo }),
    jobAccount(o.shared, config, ctx.args.user, ctx.args.group, ctx.signal),
  ]);
  const accel = await launchAccel(config, o.account, ctx.signal);
  blog.info({ kernel: boot.kernel ?? null, root: boot.root ?? null, source: boot.source, accel }, 'boot files and accelerator');
  // The boot gets its own time: [launch] boot, whole. What the image work
  // left of the deadline is the node's state (its deadlines are too short
  // for a new image), not the image's: a wait cut short would blame an image
  // that never had its chance to boot.
  const spent = (performance.now() - o.t0) / 1000;
  const left = config.timeouts.total - BEFORE_DEADLINE_S - spent;
  if (left < config.launch.boot) throw bootTimeFault(config, { spent, left, accel: accel.accel, acquired: o.acquired });
  makeRunDir(o.dirs.dir, o.account);
  // Before the first qemu: should this process die from here on (pbs_mom's
  // $prologalarm, SIGKILL), the guard stops every qemu it started.
  const guard = await guardBoot(config, o.account, runDirOf(o.dirs.dir));
  // A requeued job's taps from an earlier start go with its qemus (stopped before the disks were made afresh).
  const taps = config.launch.network === 'bridge'
    ? (await removeTaps(config, ctx.args.jobId, ctx.signal), await makeTaps(config, ctx.args.jobId, o.overlays.length, o.account, ctx.signal))
    : undefined;
  // Never past the prologue's own deadline (10 s kept for the report): a VM still booting then is stopped, not left behind.
  const hardStop = Date.now() + (config.timeouts.total * 1000 - (performance.now() - o.t0)) - BEFORE_DEADLINE_S * 1000;
  const runs = await Promise.all(o.overlays.map(async (ov, i) => {
    const seed = o.seeds[i]!;
    const paths = runPathsOf(o.dirs.dir, ov.index);
    const argv = qemuArgv(config, ctx.args.jobId, {
      index: ov.index, hostname: seed.hostname, overlay: ov.path, seed: { media: seed.media, path: seed.path, mac: seed.network?.mac },
      segment: seed.network?.segment ? { mac: seed.network.segment.mac, count: o.overlays.length } : undefined, tap: taps?.[ov.index],
      vcpus: o.request.vcpus, ramBytes: o.request.ram,
    }, accel.accel, boot, paths);
    const b0 = performance.now();
    const pid = await startVm(config, o.account, argv, paths, ctx.signal);
    const cg = joinJobCgroups(ctx.engine.jobCgroup(ctx.args.jobId, jobOwner.uid), [pid]);
    if (cg.joined.length > 0 || cg.failed.length > 0) blog[cg.failed.length > 0 ? 'warn' : 'info']({ vm: seed.hostname, pid, joined: cg.joined, failed: cg.failed }, "qemu in the job's cgroups");
    handOverSockets(paths, o.account, jobOwner);
    const full = Date.now() + config.launch.boot * 1000;
    const until = Math.min(full, hardStop);
    // The byte the console watch takes from qemu's ring, for the tail below.
    const head = { bytes: Buffer.alloc(0) };
    try {
      await waitReady({ config, account: o.account, paths, pid, until, signal: ctx.signal, silence: { seconds: config.launch.console_silence, head } });
    } catch (e) {
      // qdel: the marker's watch aborted the wait, or the epilogue stopped this
      // qemu before the watch saw the marker. Not a VM that did not come up,
      // and not a deadline: the job was deleted.
      if (e instanceof JobEnded || isEnded(config, ctx.args.jobId)) {
        blog.info({ vm: seed.hostname, pid, seconds: Math.round((performance.now() - b0) / 1000) }, `boot wait stopped: the job was deleted (${ctx.engine.terms.deleteCommand}) while its VM booted`);
        throw new JobEnded(ctx.args.jobId, `waiting for VM ${seed.hostname} to boot`);
      }
      const tail = await consoleTail(paths, 20, head);
      const seconds = Math.round((performance.now() - b0) / 1000);
      blog.error({ vm: seed.hostname, pid, err: String((e as Error).message), tail }, 'VM did not come up');
      // The deadline, not [launch] boot, ended the wait: the VM had less than its time, so nothing is known of its image.
      if (e instanceof VmBootError && e.why === 'timeout' && until < full) throw deadlineCutFault(config, { hostname: seed.hostname, seconds, accel: accel.accel });
      throw bootFault({ hostname: seed.hostname, seconds, accel: accel.accel, why: e instanceof VmBootError ? e : (e as Error), tail, silence: config.launch.console_silence });
    }
    const s = (performance.now() - b0) / 1000;
    blog.info({ vm: seed.hostname, pid, seconds: Number(s.toFixed(1)), accel: accel.accel }, 'VM booted');
    return { run: { pid, qmp: paths.qmp, agent: paths.agent }, said: `VM ${seed.hostname} booted in ${s.toFixed(1)} s (${accel.accel})` };
  }));
  confirmVms(runs.map((r) => r.run.pid));
  return { accel, runs: runs.map((r) => r.run), said: runs.map((r) => r.said), guard };
}

/** The boot wait ends this long before [timeouts] total: the time to stop the VMs and report. doctor's timeouts check counts it too. */
const BEFORE_DEADLINE_S = 10;

/** The fix for deadlines too short for a new image's work and a boot: which keys, and the batch system's alarm above them. */
const deadlineFix = (total: number) =>
  `raise [timeouts] total to ${total} s or more, with Torque's $prologalarm at least 20 s above it (Slurm: PrologEpilogTimeout; vtorque-prologue doctor's timeouts check says what to set), or keep the image cached on the node: a job on an image the node has cached spends seconds before its boot`;

/**
 * The image work (check, copy, boot files) left less than [launch] boot of the
 * prologue's deadline: refused before any qemu starts. The node's deadlines do
 * not hold a new image's work and a boot; nothing is known against the image.
 * The job is requeued: at its next start the image is cached here and its
 * boot gets its time. When the image was new and the deadlines hold a boot
 * with an image already cached, nothing is wrong with the node (NodeBusy: it
 * stays online); when they cannot hold even that, the node's config is at
 * fault for every VM job (NodeFault: it goes offline until fixed).
 */
function bootTimeFault(config: Config, o: { spent: number; left: number; accel: LaunchAccel; acquired: Acquired }): NodeFault | NodeBusy {
  const spent = Math.round(o.spent);
  const left = Math.max(0, Math.floor(o.left));
  const newImage = o.acquired.verified || o.acquired.ingested;
  const what = newImage ? 'its image was new to this node (checked and cached for it)' : 'its image was cached';
  const need = Math.ceil(spent + config.launch.boot + BEFORE_DEADLINE_S + 5);
  // A cached image's own work takes seconds: 30 s of margin for it.
  const holdsACachedBoot = config.timeouts.total - BEFORE_DEADLINE_S - 30 >= config.launch.boot;
  const Fault = newImage && holdsACachedBoot ? NodeBusy : NodeFault;
  return new Fault(`preparing the job took ${spent} s of [timeouts] total ${config.timeouts.total} s, which leaves ${left} s to boot its VMs, less than [launch] boot ${config.launch.boot} s (${o.accel}): no VM was started`, [{
    id: 'boot-time', where: '[timeouts] total',
    message: `${what}; its VMs need up to [launch] boot ${config.launch.boot} s, and the boot wait ends ${BEFORE_DEADLINE_S} s before the deadline`,
    fix: deadlineFix(need),
  }]);
}

/** The prologue's deadline ended a VM's boot wait before [launch] boot did: the node's time ran out, not the image's. */
function deadlineCutFault(config: Config, o: { hostname: string; seconds: number; accel: LaunchAccel }): NodeFault {
  return new NodeFault(`the prologue's deadline ([timeouts] total ${config.timeouts.total} s) ended the wait for VM ${o.hostname} after ${o.seconds} s, before its [launch] boot of ${config.launch.boot} s (${o.accel})`, [{
    id: 'boot-time', where: '[timeouts] total',
    message: `the VM had less than [launch] boot to answer, so nothing is known against its image`,
    fix: deadlineFix(config.timeouts.total + config.launch.boot),
  }]);
}

function writeManifest(ctx: JobContext, jr: JobRequest, place: Placement, a: Acquired, dirs: JobDirs, overlays: Overlay[], seeds: SeedResult[], owner: FileOwner, booted: Booted | undefined): string {
  const report: ImageReport = a.report;
  const request = jr.request;
  const mine = place.vms.filter((v) => v.host === place.hosts[place.position]);
  const path = `${dirs.dir}/manifest.json`;
  try {
    const m: Manifest = {
      version: 1,
      vtorque: VERSION,
      job: { id: ctx.args.jobId, user: ctx.args.user, group: ctx.args.group, name: ctx.args.jobName, queue: ctx.args.queue, hosts: place.hosts, vms: place.vms },
      node: ctx.node,
      position: place.position,
      createdAt: new Date().toISOString(),
      request,
      requestSource: jr.source,
      image: {
        name: report.image.name,
        path: report.image.path,
        sha256: report.digest,
        format: report.verdict.format.format,
        virtualSize: report.verdict.format.virtualSize,
        family: report.family,
        inspected: report.verdict.facts.os ? { distro: report.verdict.facts.os.distro, arch: report.verdict.facts.os.arch, product: report.verdict.facts.os.product } : undefined,
        verdictFromCache: report.fromCache,
      },
      base: { ...a.base, ingested: a.ingested, ramdiskCopy: dirs.ramdisk ? overlays[0]?.backing : undefined },
      vms: overlays.map((o) => ({
        index: o.index, jobIndex: mine[o.index]!.jobIndex, hostname: mine[o.index]!.hostname,
        dir: o.path.slice(0, o.path.lastIndexOf('/')), overlay: o.path, format: 'qcow2' as const, backing: o.backing, baseDigest: a.base.digest,
        seed: { media: seeds[o.index]!.media, path: seeds[o.index]!.path, instanceId: seeds[o.index]!.instanceId, network: seeds[o.index]!.network },
        run: booted?.runs[o.index],
      })),
      accel: booted?.accel,
    };
    // Written as root, then handed to [jobfiles] owner (root or the launch account; never the job owner).
    writeFileAtomic(path, JSON.stringify(m, null, 2) + '\n', 0o600);
    ownFile(path, owner);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new NodeFault(`cannot write the job manifest in ${dirs.dir} (${code})`, [
      { id: 'job-dir', where: dirs.dir, message: `cannot be written: ${code}`, fix: 'check [paths] job_dir: it must exist or be creatable by root, with free space' },
    ]);
  }
  return path;
}

function summary(jobId: string, r: VmRequest, manifest: string, a: Acquired, seeds: SeedResult[]): string[] {
  const img = a.report;
  const distro = r.distro ?? r.family ?? 'distro from the image';
  const os = img.verdict.facts.os ? `${img.verdict.facts.os.distro} ${img.verdict.facts.os.major}` : img.family ?? 'unknown OS';
  return [
    `image ${img.image.name}: ${img.verdict.format.format}, ${os}, sha256 ${img.digest.slice(0, 12)}; meets the guest image requirements${img.fromCache ? ' (verdict cached)' : ''}`,
    `VM job ${jobId}: ${r.vms_per_node} VM${r.vms_per_node > 1 ? 's' : ''} of ${r.img} (${distro}, ${r.arch}), ${r.vcpus} vCPU${r.vcpus > 1 ? 's' : ''} and ${formatSize(r.ram)} RAM each, disks on ${r.fs_type}`,
    `disks: ${r.vms_per_node} copy-on-write overlay${r.vms_per_node > 1 ? 's' : ''} on the node's cached copy (${a.ingested ? 'copied into the cache for this job' : 'already cached'})`,
    `cloud-init: ${seeds.map((x) => x.hostname).join(', ')} (NoCloud seed${seeds.length > 1 ? 's' : ''} on ${seeds[0]?.media === 'inject' ? 'their disks' : `${seeds[0]?.media} media`})`,
    `manifest: ${manifest}`,
  ];
}
