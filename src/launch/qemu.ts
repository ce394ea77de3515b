// Booting and stopping a job's VMs on this node. qemu runs as the launch
// account ([launch] user): never root (a guest escape would own the node),
// never the job owner (who could ptrace it, or rewrite the disks it has
// open). It is daemonized, so it outlives the prologue once the prologue has
// succeeded (a boot guard stops it if the prologue dies first), and writes only in
// <job_dir>/<jobid>/run/, the launch account's 0700 directory. Root takes
// nothing there on trust: the sockets are moved out into root's own job
// directory before root connects to them, and what root reads there (the pid
// file) is opened without following links and must be the launch account's
// own regular file. The serial console is no file at all: qemu keeps its last
// CONSOLE_RING bytes in memory (see qemuArgv), read through QMP.
import {
  chmodSync, closeSync, constants, existsSync, fchmodSync, fchownSync, fstatSync, lchownSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync,
  realpathSync, renameSync, rmdirSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import type { Config } from '../config/schema.js';
import { JobFault, NodeFault, stopReason } from '../core/errors.js';
import { ToolError, runTool } from '../tools/run.js';
import { groupOf, initGroupsOf, passwdOf } from '../tools/nss.js';
import { readOwnedFile } from '../tools/safedir.js';
import { FrameDecoder, encodeFrame, parseReady, FRAME } from './protocol.js';
import type { BootFiles } from './bootfiles.js';

export type LaunchAccel = 'kvm' | 'tcg';

export interface LaunchAccount {
  user: string;
  uid: number;
  gid: number;
  /** Supplementary groups (NSS initgroups): the kvm group is usually one. */
  groups: number[];
}

/** Where one VM's qemu keeps its files, and where root moves its sockets to. */
export interface VmRunPaths {
  runDir: string;
  pidFile: string;
  /** The sockets as qemu makes them, in run/. */
  qmpInRun: string;
  agentInRun: string;
  /** The same sockets once root moved them into its own job directory. */
  qmp: string;
  agent: string;
}

/** What qemu needs to know of one VM (the manifest's vms[] entry and the job's request). */
export interface VmSpec {
  index: number;
  hostname: string;
  overlay: string;
  seed: { media: 'iso' | 'vfat' | 'inject'; path: string; mac?: string };
  /** network = bridge: the tap device made for this VM (tapName), instead of the user-mode NIC. */
  tap?: string;
  /** The second NIC on the job's private segment, and how many of the job's VMs this node runs (network = user). */
  segment?: { mac: string; count: number };
  vcpus: number;
  ramBytes: number;
}

export const runDirOf = (jobDir: string) => `${jobDir}/run`;

export const runPathsOf = (jobDir: string, index: number): VmRunPaths => {
  const runDir = runDirOf(jobDir);
  return {
    runDir,
    pidFile: `${runDir}/vm-${index}.pid`,
    qmpInRun: `${runDir}/vm-${index}.qmp`,
    agentInRun: `${runDir}/vm-${index}.agent`,
    qmp: `${jobDir}/vm-${index}.qmp`,
    agent: `${jobDir}/vm-${index}.agent`,
  };
};

const launchFault = (summary: string, message: string, fix: string, cause?: unknown) =>
  new NodeFault(summary, [{ id: 'launch', where: '[launch]', message, fix }], { cause });

async function idOf(config: Config, db: 'passwd' | 'group', name: string, signal?: AbortSignal): Promise<number> {
  const id = db === 'passwd' ? (await passwdOf(config, name, signal))?.uid : (await groupOf(config, name, signal))?.gid;
  if (id === undefined) {
    throw launchFault(`the launch ${db === 'passwd' ? 'account' : 'group'} ${name} is not known on this node`, `getent ${db} ${name} found nothing`,
      `create it (useradd --system --no-create-home --shell /usr/sbin/nologin ${name}; install.sh does), or set [launch] ${db === 'passwd' ? 'user' : 'group'}`);
  }
  return id;
}

/** [launch] user and group as ids; root is refused by the schema and again here. */
export async function resolveLaunchAccount(config: Config, signal?: AbortSignal): Promise<LaunchAccount> {
  const [uid, gid, groups] = await Promise.all([
    idOf(config, 'passwd', config.launch.user, signal), idOf(config, 'group', config.launch.group, signal), initGroupsOf(config, config.launch.user, signal),
  ]);
  if (uid === 0 || gid === 0 || groups.includes(0)) {
    throw launchFault('the launch account is root', `[launch] user ${config.launch.user} or group ${config.launch.group}, or one of its groups, has id 0`, 'use an unprivileged account: qemu must never run as root');
  }
  return { user: config.launch.user, uid, gid, groups };
}

/**
 * A program run as the launch account, with its supplementary groups: node's
 * spawn with uid/gid drops them (setgroups(0)), and the kvm group is one. So
 * root runs setpriv, which sets uid, gid and exactly the groups resolved above
 * (those kvmUsableBy in kvm.ts judges) and execs the program; no_new_privs, so nothing
 * qemu runs can gain privileges through a setuid binary.
 */
export function asLaunchAccount(config: Config, account: LaunchAccount, program: string, args: readonly string[]): [string, string[]] {
  return [config.tools.setpriv, [
    '--reuid', String(account.uid), '--regid', String(account.gid), ...(account.groups.length > 0 ? ['--groups', account.groups.join(',')] : ['--clear-groups']), '--no-new-privs',
    '--', program, ...args,
  ]];
}

// qemu's option syntax: a comma inside a value is written twice.
const optValue = (s: string) => s.replace(/,/g, ',,');

/**
 * The serial console's size: qemu's ringbuf chardev keeps the last 1 MiB the
 * guest wrote, in qemu's memory, and drops the oldest bytes when it is full.
 * A console written to a file (-chardev file) grows as long as the guest
 * writes, and a guest flooding its console (a user image's root, a kernel
 * loop) would fill the node's disk under <job_dir>; a file has no size cap in
 * qemu, and RLIMIT_FSIZE would cap the disks qemu writes too. A pipe to a
 * reader of ours would need a process per VM living as long as it. 1 MiB holds
 * a Debian or RHEL boot many times over (30-60 KiB) and costs 1 MiB of RAM per
 * VM. Root reads it with QMP ringbuf-read (consoleTail); qemu's size must be a
 * power of two.
 */
export const CONSOLE_RING = 1024 * 1024;
/** The console chardev's id, for QMP ringbuf-read (doc/admin.md shows the command). */
export const CONSOLE_ID = 'con';

/** The qemu command line of one VM (doc: launch-spec "qemu command line"). */
export function qemuArgv(config: Config, jobId: string, vm: VmSpec, accel: LaunchAccel, boot: BootFiles, paths: VmRunPaths): string[] {
  const l = config.launch;
  const args = [
    '-name', optValue(`vtorque-${jobId}-vm${vm.index}`),
    '-machine', `${l.machine},accel=${accel}`,
    ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-smp', String(vm.vcpus),
    '-m', String(Math.max(64, Math.floor(vm.ramBytes / 2 ** 20))),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-daemonize', '-pidfile', paths.pidFile,
    '-qmp', `unix:${optValue(paths.qmpInRun)},server=on,wait=off`,
    '-chardev', `ringbuf,id=${CONSOLE_ID},size=${CONSOLE_RING}`, '-serial', `chardev:${CONSOLE_ID}`,
    '-drive', `file=${optValue(vm.overlay)},if=virtio,format=qcow2,discard=unmap`,
    ...(vm.seed.media === 'inject' ? [] : ['-drive', `file=${optValue(vm.seed.path)},if=virtio,format=raw,readonly=on`]),
    '-nic', `${vm.tap ? `tap,ifname=${vm.tap},script=no,downscript=no` : 'user'},model=virtio-net-pci${vm.seed.mac ? `,mac=${vm.seed.mac}` : ''}`,
    ...(vm.segment ? segmentArgs(vm.index, vm.segment, paths.runDir) : []),
    '-device', 'virtio-serial-pci',
    '-chardev', `socket,id=agent,path=${optValue(paths.agentInRun)},server=on,wait=off`,
    '-device', 'virtserialport,chardev=agent,name=org.vtorque.agent.0',
  ];
  if (boot.kernel && boot.initrd && boot.root) {
    args.push('-kernel', boot.kernel, '-initrd', boot.initrd, '-append', `root=${boot.root} ro console=ttyS0`);
  }
  // The schema allows only plain tokens separated by spaces: no shell, no quoting to misread.
  if (l.extra_args.trim() !== '') args.push(...l.extra_args.trim().split(/ +/));
  return args;
}

/** The unix datagram socket VM `from` binds for its link to VM `to`, in run/ (the launch account's, 0700: no one else can send to it). */
export const segmentSocket = (runDir: string, from: number, to: number) => `${runDir}/seg-${from}-${to}`;

/**
 * The job's private L2 segment on this node, as a star around VM 0: qemu's
 * hubs live inside one process, so VM 0's qemu holds the hub, with its own
 * NIC and one unix datagram link per other VM; each other VM's NIC is that
 * link's other end. A hub floods a frame to every port but the one it came
 * from, so VM j reaches VM k through VM 0's qemu (not its guest); a mesh of
 * hubs would loop. Unix sockets in run/, not -netdev socket's TCP or UDP
 * (mcast on the loopback, or a port any local user could connect to): only
 * the launch account can send into the segment. A datagram to a peer whose
 * qemu has not bound its socket yet is dropped, as on a cable not plugged in
 * yet; ARP retries.
 */
function segmentArgs(index: number, seg: { mac: string; count: number }, runDir: string): string[] {
  const link = (id: string, from: number, to: number) => ['-netdev',
    `dgram,id=${id},local.type=unix,local.path=${optValue(segmentSocket(runDir, from, to))},remote.type=unix,remote.path=${optValue(segmentSocket(runDir, to, from))}`];
  const nic = ['-device', `virtio-net-pci,netdev=seg,mac=${seg.mac}`];
  if (index !== 0) return [...link('seg', index, 0), ...nic];
  const args = ['-netdev', 'hubport,id=seg,hubid=0', ...nic];
  for (let j = 1; j < seg.count; j++) args.push(...link(`seg${j}`, 0, j), '-netdev', `hubport,id=hub${j},hubid=0,netdev=seg${j}`);
  return args;
}

// The most VMs a job has on one node (#VM vms_per_node's limit): the epilogue looks for that many taps.
const MAX_VMS_PER_NODE = 64;

/**
 * The tap device of a job's VM on this node: "vt" and 13 hex digits of a hash
 * of the job id and the index (15 characters, the kernel's limit). Derived,
 * not stored, so the epilogue finds every tap of the job without trusting a
 * file; job ids are unique on a server, so are the names.
 */
export function tapName(jobId: string, index: number): string {
  return `vt${createHash('sha256').update(`${jobId}\0${index}`).digest('hex').slice(0, 13)}`;
}

const tapExists = (name: string) => existsSync(`/sys/class/net/${name}`);

/**
 * network = bridge: one tap per VM, made by root for the launch account (the
 * only account besides root that can attach to it; never the job owner, who
 * could then send any frame onto the site's network), enslaved to
 * [launch] bridge and up. A tap of that name already there is refused: it is
 * not ours to reuse. Made in order; on a failure the caller removes them all.
 */
export async function makeTaps(config: Config, jobId: string, count: number, account: LaunchAccount, signal?: AbortSignal): Promise<string[]> {
  const bridge = config.launch.bridge;
  if (!existsSync(`/sys/class/net/${bridge}/bridge`)) {
    throw launchFault(`[launch] bridge ${bridge} is not a bridge on this node`, `/sys/class/net/${bridge}/bridge does not exist`, `create the bridge (e.g. ip link add ${bridge} type bridge, with the node's NIC in it), or set [launch] network = user`);
  }
  const ip = (args: string[]) => runTool(config.tools.ip, args, { timeout: config.timeouts.tool * 1000, toolKey: 'ip', signal });
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = tapName(jobId, i);
    if (tapExists(name)) throw launchFault(`the tap device ${name} for VM ${i} of job ${jobId} already exists`, `${name} exists before the prologue made it`, `remove it (ip link del ${name}) once no VM of job ${jobId} runs`);
    await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(account.uid), 'group', String(account.gid)]);
    names.push(name);
    await ip(['link', 'set', 'dev', name, 'master', bridge]);
    await ip(['link', 'set', 'dev', name, 'up']);
  }
  return names;
}

/** Removes every tap device of the job on this node (the names tapName gives); how many it removed. */
export async function removeTaps(config: Config, jobId: string, signal?: AbortSignal): Promise<number> {
  let removed = 0;
  for (let i = 0; i < MAX_VMS_PER_NODE; i++) {
    const name = tapName(jobId, i);
    if (!tapExists(name)) continue;
    await runTool(config.tools.ip, ['link', 'del', 'dev', name], { timeout: config.timeouts.tool * 1000, toolKey: 'ip', signal });
    removed++;
  }
  return removed;
}

/** run/: made by root in its verified job directory, then handed to the launch account by descriptor. */
export function makeRunDir(jobDir: string, account: LaunchAccount): string {
  const dir = runDirOf(jobDir);
  mkdirSync(dir, { mode: 0o700 });
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (st.uid !== 0) throw new Error(`${dir} is owned by uid ${st.uid}, not root`);
    // fchown/fchmod through the descriptor that was checked.
    fchownSync(fd, account.uid, account.gid);
    fchmodSync(fd, 0o700);
  } finally {
    closeSync(fd);
  }
  return dir;
}

/** The pid in a VM's pid file, if it is a live qemu of the launch account running the configured binary. */
export function qemuPid(config: Config, pidFile: string, account: LaunchAccount): number | undefined {
  // Only the launch account's own regular file: a hard link to a root file would have root's uid.
  const text = readOwnedFile(pidFile, [account.uid], 32);
  const pid = Number(text?.trim());
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  return isOurQemu(config, pid, account) ? pid : undefined;
}

/** /proc/PID belongs to the launch account (every uid) and its program is [tools] qemu_system. */
export function isOurQemu(config: Config, pid: number, account: LaunchAccount): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const uids = /^Uid:\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)/m.exec(status);
    if (!uids || uids.slice(1).some((u) => Number(u) !== account.uid)) return false;
    return readlinkSync(`/proc/${pid}/exe`) === realpathSync(config.tools.qemu_system);
  } catch {
    return false;
  }
}

// A qemu started in this run that was not handed over to the job yet is killed
// when the prologue exits, whatever ends it (the deadline's process.exit included).
const unconfirmed = new Set<number>();
let exitHook = false;
function killAtExit(pid: number): void {
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => unconfirmed.forEach((p) => {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }));
  }
  unconfirmed.add(pid);
}

/** The job's VMs are up and answered: from now on they are the epilogue's to stop. */
export function confirmVms(pids: readonly number[]): void {
  for (const p of pids) unconfirmed.delete(p);
}

/**
 * The boot guard: the launch account's /bin/sh, in a session of its own (so
 * no kill of the prologue's session or process group reaches it), reading
 * one line from a pipe only the prologue holds. "keep" (the prologue is done
 * and succeeded): the VMs are the job's, it exits. Anything else, or the end
 * of the pipe (the prologue exited, or was killed, SIGKILL included): it
 * SIGKILLs every qemu of run/ that is still there, and again a second later
 * for one that was still inside its -daemonize start (qemu writes its pid
 * file right after it forks its daemon, and a daemon outlives the death of
 * the qemu that started it). A daemonized qemu is no child of the prologue,
 * so no parent-death signal can reach it; this can. A pid file is trusted
 * only as far as this: the pid must belong to a process that holds that very
 * pid file open (qemu keeps it open, locked, for its whole life), so a pid
 * reused by another process is never signalled. As the launch account it
 * could signal nothing but the launch account's processes anyway. Shell
 * builtins and /bin/sleep only: nothing is looked up on PATH.
 */
const BOOT_GUARD = [
  'IFS= read -r word',
  '[ "$word" = keep ] && exit 0',
  'cd -- "$1" 2>/dev/null || exit 0',
  'sweep() {',
  '  for f in vm-*.pid; do',
  '    IFS= read -r pid < "$f" 2>/dev/null || continue',
  '    case $pid in ""|*[!0-9]*) continue ;; esac',
  '    for fd in /proc/"$pid"/fd/*; do',
  '      if [ "$fd" -ef "$f" ]; then kill -s KILL "$pid" 2>/dev/null; break; fi',
  '    done',
  '  done',
  '}',
  'sweep',
  '/bin/sleep 1',
  'sweep',
].join('\n');

export interface BootGuard {
  /** The prologue succeeded: the VMs are the job's now, and the guard leaves them alone. */
  keep(): void;
}

/**
 * Starts the boot guard for run/ (made by makeRunDir) before the first qemu
 * starts. It holds no descriptor of ours but its stdin: the pipe ends when
 * this process does, however it ends.
 */
export function guardBoot(config: Config, account: LaunchAccount, runDir: string): Promise<BootGuard> {
  const [cmd, args] = asLaunchAccount(config, account, '/bin/sh', ['-c', BOOT_GUARD, 'vtorque-boot-guard', runDir]);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { detached: true, stdio: ['pipe', 'ignore', 'ignore'], cwd: '/', env: { LANG: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    child.once('error', (e) => reject(launchFault('the boot guard could not be started', `${cmd} could not start /bin/sh as ${account.user}: ${e.message}`, 'install util-linux (setpriv), or set [tools] setpriv', e)));
    child.once('spawn', () => {
      const stdin = child.stdin as Socket;
      stdin.on('error', () => { /* the guard is gone: nothing to tell it */ });
      // Neither keeps this process alive: the guard is there for when it ends.
      stdin.unref();
      child.unref();
      resolve({ keep: () => { stdin.end('keep\n'); } });
    });
  });
}

/** Starts one VM's qemu as the launch account; -daemonize returns once qemu is up. Returns its pid. */
export async function startVm(config: Config, account: LaunchAccount, argv: string[], paths: VmRunPaths, signal?: AbortSignal): Promise<number> {
  try {
    await runTool(...asLaunchAccount(config, account, config.tools.qemu_system, argv), {
      timeout: config.timeouts.tool * 1000, toolKey: 'qemu_system', cwd: paths.runDir, signal, stdout: 'ignore',
    });
  } catch (e) {
    throw qemuMemoryFault(e, argv) ?? e;
  }
  const pid = qemuPid(config, paths.pidFile, account);
  if (pid === undefined) {
    throw launchFault('qemu started but left no pid file we can trust', `${paths.pidFile} is missing, or names no qemu of ${account.user}`, 'run qemu by hand as the launch account and see why');
  }
  killAtExit(pid);
  return pid;
}

/**
 * qemu that could not get the guest's memory ("cannot set up guest memory
 * 'pc.ram': Cannot allocate memory"): admission (launch/admission.ts) let the
 * request in, so the host's memory went elsewhere meanwhile, or the job's own
 * limit (its cgroup) is lower than its VMs. Either way the request is the
 * job's to change, never a fault of the node.
 */
export function qemuMemoryFault(e: unknown, argv: readonly string[]): JobFault | undefined {
  if (!(e instanceof ToolError) || e.failure !== 'failed' || !/cannot allocate memory|cannot set up guest memory|\bENOMEM\b|out of memory/i.test(e.stderrHead)) return undefined;
  const m = argv[argv.indexOf('-m') + 1];
  return new JobFault('qemu could not allocate the memory its VM asks for', [
    { id: 'vm-memory', where: m && argv.includes('-m') ? `ram (qemu -m ${m})` : 'ram', message: e.stderrHead.slice(0, 300), fix: 'ask for less ram per VM or fewer VMs per node, or for more memory from the batch system' },
  ], { cause: e });
}

/**
 * Moves qemu's sockets out of run/ into root's job directory (a rename in one
 * file system; lstat must then show a socket of the launch account), so no
 * path root later connects to passes through a directory another account
 * controls. The agent socket goes to the job owner (0600): only they (and
 * root) can connect; the QMP socket to root alone.
 */
export function handOverSockets(paths: VmRunPaths, account: LaunchAccount, jobOwner: { uid: number; gid: number }): void {
  for (const [from, to, owner] of [[paths.agentInRun, paths.agent, jobOwner], [paths.qmpInRun, paths.qmp, { uid: 0, gid: 0 }]] as const) {
    renameSync(from, to);
    const st = lstatSync(to);
    if (!st.isSocket() || st.uid !== account.uid) throw launchFault('qemu made something else than its socket', `${from} is not a socket of ${account.user}`, 'check the node: the launch account may be misused');
    lchownSync(to, owner.uid, owner.gid);
    // Only root writes in this directory and to is a socket (lstat above): chmod cannot be sent elsewhere.
    chmodSync(to, 0o600);
  }
}

/**
 * The console the silence watch took from the ring: ringbuf-read removes what
 * it returns, so the first byte it saw is kept here, and consoleTail puts it
 * back in front of the rest.
 */
export interface ConsoleHead { bytes: Buffer }

/**
 * Connects to the agent socket as root, says 'H' and waits for 'R'; retries
 * while qemu runs, until `until` (ms since epoch). With silence.seconds > 0
 * ([launch] console_silence), the console is watched too: a guest that has
 * written not one byte to it by then is given up as one that cannot boot
 * (VmBootError 'silent'), rather than waited for until `until`.
 */
export async function waitReady(o: {
  config: Config; account: LaunchAccount; paths: VmRunPaths; pid: number; until: number; signal?: AbortSignal; silence?: { seconds: number; head: ConsoleHead };
}): Promise<{ hostname: string }> {
  // Ends the hello under way when the watch finds the console silent, and the watch when the wait ends.
  const stop = new AbortController();
  const onOuter = () => stop.abort();
  o.signal?.addEventListener('abort', onOuter, { once: true });
  const heard = { silent: false };
  const watch = o.silence && o.silence.seconds > 0 ? watchSilence(o.paths.qmp, Date.now() + o.silence.seconds * 1000, o.silence.head, stop, heard) : undefined;
  try {
    for (;;) {
      // The deadline or the job's deletion (qdel): the signal's own reason, so the caller can tell them apart.
      if (o.signal?.aborted) throw o.signal.reason instanceof Error ? o.signal.reason : new Error(stopReason(o.signal).why);
      if (heard.silent) throw new VmBootError('silent', `nothing on the console within ${o.silence!.seconds} s`);
      if (!isOurQemu(o.config, o.pid, o.account)) throw new VmBootError('qemu exited');
      const left = o.until - Date.now();
      if (left <= 0) throw new VmBootError('timeout');
      const r = await helloOnce(o.paths.agent, Math.min(left, 15_000), stop.signal);
      if (r) return r;
      if (heard.silent) throw new VmBootError('silent', `nothing on the console within ${o.silence!.seconds} s`);
      await new Promise((res) => setTimeout(res, 500));
    }
  } finally {
    o.signal?.removeEventListener('abort', onOuter);
    stop.abort();
    await watch?.catch(() => undefined);
  }
}

/**
 * Reads one byte of the console every 2 s until the first one comes (kept in
 * head: the read removed it from the ring) or `end` passes. heard.silent
 * (and stop aborted): qemu answered at `end` and its console was still empty. A read
 * qemu did not answer says nothing about the guest: the watch then gives up
 * without a verdict, and the wait goes on to [launch] boot. One byte, not the
 * ring: what an admin reads later (doc/admin.md) loses only that byte.
 */
async function watchSilence(qmp: string, end: number, head: ConsoleHead, stop: AbortController, heard: { silent: boolean }): Promise<void> {
  for (;;) {
    const last = Date.now() >= end;
    const data = await qmpCommand(qmp, 'ringbuf-read', { device: CONSOLE_ID, size: 1, format: 'base64' }, 10_000);
    if (stop.signal.aborted || typeof data !== 'string') return;
    const b = Buffer.from(data, 'base64');
    if (b.length > 0) {
      head.bytes = Buffer.concat([head.bytes, b]);
      return;
    }
    if (last) {
      heard.silent = true;
      stop.abort();
      return;
    }
    await new Promise<void>((res) => {
      const timer = setTimeout(done, Math.max(0, Math.min(2000, end - Date.now())));
      function done() {
        clearTimeout(timer);
        stop.signal.removeEventListener('abort', done);
        res();
      }
      stop.signal.addEventListener('abort', done, { once: true });
    });
    if (stop.signal.aborted) return;
  }
}

export class VmBootError extends Error {
  constructor(readonly why: 'timeout' | 'qemu exited' | 'agent refused' | 'silent', detail?: string) {
    super(detail ? `${why}: ${detail}` : why);
  }
}

/** One connection: undefined when it closed or timed out without 'R' (the guest is still booting). */
function helloOnce(path: string, ms: number, signal?: AbortSignal): Promise<{ hostname: string } | undefined> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    const dec = new FrameDecoder();
    let done = false;
    const finish = (v: { hostname: string } | undefined, err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err);
      else resolve(v);
    };
    const onAbort = () => finish(undefined);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => finish(undefined), ms);
    sock.on('connect', () => sock.write(encodeFrame(FRAME.hello)));
    sock.on('data', (b: Buffer) => {
      try {
        for (const f of dec.push(b)) {
          if (f.type === FRAME.ready) return finish({ hostname: parseReady(f.payload).hostname });
          if (f.type === FRAME.error) return finish(undefined, new VmBootError('agent refused', f.payload.toString('utf8').slice(0, 200)));
        }
      } catch (e) {
        finish(undefined, new VmBootError('agent refused', (e as Error).message));
      }
    });
    sock.on('error', () => finish(undefined));
    sock.on('close', () => finish(undefined));
  });
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[A-Za-z]|\u001b[()][A-Z0-9]/g;

/**
 * The last n lines of a VM's console, terminal escapes removed; report/user.ts
 * escapes what control characters remain. Read (and so emptied) from qemu's
 * ring through QMP: none when qemu is gone, whose console went with it.
 */
export async function consoleTail(paths: VmRunPaths, n = 20, head?: ConsoleHead): Promise<string[]> {
  const data = await qmpCommand(paths.qmp, 'ringbuf-read', { device: CONSOLE_ID, size: CONSOLE_RING, format: 'base64' }, 10_000);
  const rest = typeof data === 'string' ? Buffer.from(data, 'base64') : Buffer.alloc(0);
  // The byte the silence watch took first (waitReady), then the ring: the console in its order.
  const text = Buffer.concat([head?.bytes ?? Buffer.alloc(0), rest]).subarray(-64 * 1024).toString('utf8');
  return text.replace(ANSI, '').split(/\r?\n|\r/).map((l) => l.trimEnd()).filter((l) => l !== '').slice(-n).map((l) => (l.length > 200 ? `${l.slice(0, 200)}...` : l));
}

// A QMP reply is a JSON line; ringbuf-read's is the ring in base64 (1.4 MiB). qemu is the launch account's: nothing bigger is read.
const QMP_MAX = 4 * CONSOLE_RING;

/**
 * One QMP command on root's own socket (handOverSockets made it so, and it is
 * checked again here): qmp_capabilities, then the command; its "return"
 * value, or undefined when there is no such socket, qemu answers with an
 * error, or no answer comes within ms. Events between are skipped.
 */
export function qmpCommand(qmp: string, command: string, args: Record<string, unknown> | undefined, ms: number): Promise<unknown> {
  return new Promise((resolve) => {
    let st;
    try {
      st = lstatSync(qmp);
    } catch {
      return resolve(undefined);
    }
    if (!st.isSocket() || st.uid !== 0) return resolve(undefined);
    const sock = createConnection({ path: qmp });
    sock.setEncoding('utf8');
    let buf = '';
    let step = 0;
    const done = (v: unknown) => { clearTimeout(timer); sock.destroy(); resolve(v); };
    const timer = setTimeout(() => done(undefined), ms);
    sock.on('data', (b: string) => {
      buf += b;
      if (buf.length > QMP_MAX) return done(undefined);
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (text === '') continue;
        let m: unknown;
        try {
          m = JSON.parse(text);
        } catch {
          return done(undefined);
        }
        if (typeof m !== 'object' || m === null) return done(undefined);
        if (step === 0 && 'QMP' in m) {
          step = 1;
          sock.write('{"execute":"qmp_capabilities"}\n');
        } else if (step === 1 && 'return' in m) {
          step = 2;
          sock.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
        } else if ('error' in m) {
          return done(undefined);
        } else if (step === 2 && 'return' in m) {
          return done((m as { return: unknown }).return);
        }
      }
    });
    sock.on('error', () => done(undefined));
    sock.on('close', () => done(undefined));
  });
}

/** QMP system_powerdown: the guest's ACPI power button. */
const powerdown = async (qmp: string, ms: number): Promise<boolean> => (await qmpCommand(qmp, 'system_powerdown', undefined, ms)) !== undefined;

const VM_PID = /^vm-([0-9]+)\.pid$/;

/**
 * Stops every qemu of a job on this node: ACPI power-off, graceSeconds to
 * obey, then SIGKILL. Only a pid that is a qemu of the launch account running
 * the configured binary is ever signalled (a pid file is not trusted blindly).
 */
export async function stopJobVms(config: Config, jobDir: string, account: LaunchAccount, graceSeconds: number): Promise<{ powered: number; killed: number }> {
  const runDir = runDirOf(jobDir);
  let names: string[];
  try {
    const st = lstatSync(runDir);
    if (!st.isDirectory() || st.uid !== account.uid) return { powered: 0, killed: 0 };
    names = readdirSync(runDir);
  } catch {
    return { powered: 0, killed: 0 };
  }
  const vms = names.map((n) => VM_PID.exec(n)?.[1]).filter((i): i is string => i !== undefined).map(Number)
    .map((i) => ({ paths: runPathsOf(jobDir, i), pid: qemuPid(config, runPathsOf(jobDir, i).pidFile, account) }))
    .filter((v): v is { paths: VmRunPaths; pid: number } => v.pid !== undefined);
  let powered = 0;
  let killed = 0;
  await Promise.all(vms.map(async (v) => {
    if (graceSeconds > 0 && await powerdown(v.paths.qmp, 5000)) {
      const until = Date.now() + graceSeconds * 1000;
      while (Date.now() < until && isOurQemu(config, v.pid, account)) await new Promise((r) => setTimeout(r, 250));
      if (!isOurQemu(config, v.pid, account)) {
        powered++;
        return;
      }
    }
    if (isOurQemu(config, v.pid, account)) {
      try {
        process.kill(v.pid, 'SIGKILL');
        killed++;
      } catch {
        /* gone in between */
      }
      const until = Date.now() + 5000;
      while (Date.now() < until && isOurQemu(config, v.pid, account)) await new Promise((r) => setTimeout(r, 100));
    }
    unconfirmed.delete(v.pid);
  }));
  return { powered, killed };
}

/**
 * Empties run/ as the launch account (never a recursive delete as root
 * through a directory another account controls), then removes the empty
 * directory as root. false: something was left, and the caller must not
 * remove the job directory recursively as root.
 */
export async function clearRunDir(config: Config, jobDir: string, account: LaunchAccount, signal?: AbortSignal): Promise<boolean> {
  const runDir = runDirOf(jobDir);
  let st;
  try {
    st = lstatSync(runDir);
  } catch {
    return true;
  }
  if (st.isDirectory() && st.uid === account.uid) {
    const names = readdirSync(runDir);
    if (names.length > 0) {
      await runTool(config.tools.rm, ['-rf', '--', ...names.map((n) => `./${n}`)], { timeout: config.timeouts.tool * 1000, toolKey: 'rm', uid: account.uid, gid: account.gid, cwd: runDir, signal })
        .catch(() => undefined);
    }
  }
  try {
    // rmdir only removes an empty directory, and a symlink is not one: nothing is followed.
    rmdirSync(runDir);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** A JobFault for a VM that did not answer: what happened and the last lines of its console. */
export function bootFault(o: { hostname: string; seconds: number; accel: LaunchAccel; why: VmBootError | Error; tail: string[]; silence?: number }): JobFault {
  if (o.why instanceof VmBootError && o.why.why === 'silent') return silentFault(o.hostname, o.silence ?? o.seconds, o.accel);
  const what = o.why instanceof VmBootError
    ? o.why.why === 'timeout' ? `did not answer within ${o.seconds} s ([launch] boot, ${o.accel})`
      : o.why.why === 'qemu exited' ? 'stopped while booting (qemu exited)'
        : `its guest agent refused (${o.why.message})`
    : o.why.message;
  const tail = o.tail.length > 0 ? o.tail : [o.why instanceof VmBootError && o.why.why === 'qemu exited' ? '(none: the console was in qemu\'s memory)' : '(the console is empty)'];
  return new JobFault(`VM ${o.hostname} ${what}; the last lines of its console follow`, tail.map((l, i) => ({
    id: 'vm-boot', where: `${o.hostname} console`, message: l,
    fix: i === tail.length - 1 ? 'check that the image boots under qemu with cloud-init and python3, and that it boots within [launch] boot (ask your admin); vtorque-prologue check --image helps' : undefined,
  })));
}

/**
 * A VM that wrote not one byte to its serial console within [launch]
 * console_silence: no kernel of ours was booted (we pass console=ttyS0 to
 * one), so the firmware found no bootloader, or the image's bootloader and
 * kernel write nothing to ttyS0. Either way the image cannot be watched
 * booting, and waiting the rest of [launch] boot would tell no more.
 */
export function silentFault(hostname: string, seconds: number, accel: LaunchAccel): JobFault {
  return new JobFault(`VM ${hostname} printed nothing on its console within ${seconds} s ([launch] console_silence, ${accel}) and was stopped`, [{
    id: 'vm-silent', where: `${hostname} console`,
    message: 'the image has no bootloader, or its bootloader and kernel do not write to the serial console (ttyS0), so it cannot be seen booting',
    fix: 'for image builders: install a bootloader (GRUB) that boots the kernel with console=ttyS0 (doc/guest-images.md, "Serial console"); vtorque-prologue check --image helps',
  }]);
}
