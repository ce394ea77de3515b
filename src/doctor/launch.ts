// doctor's `launch` check: what a #VM job needs after the prologue: pbs_mom
// starts the job through vtorque's $job_starter, or under Slurm the batch
// script job_submit.lua wrapped runs vtorque-slurm-run (else the script runs
// on the host), the starter is root's alone (pbs_mom execs it for every job), the
// launch account exists and can use /dev/kvm, and qemu-system is there.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { groupOf, passwdOf } from '../tools/nss.js';
import { untrustedResolved } from '../tools/trust.js';
import type { CheckResult, DoctorContext } from './checks.js';

const CHECK = 'launch';
const r = (status: CheckResult['status'], message: string, fix?: string): CheckResult => ({ check: CHECK, status, message, ...(fix ? { fix } : {}) });

/** pbs_mom's $job_starter and $job_starter_run_privileged from mom_priv/config (the last line wins, as pbs_mom reads them). */
export function readJobStarter(configText: string): { starter?: string; privileged: boolean } {
  let starter: string | undefined;
  let privileged = false;
  for (const line of configText.split('\n')) {
    const m = /^\s*\$(job_starter|job_starter_run_privileged)\s+(.*?)\s*$/.exec(line);
    if (!m) continue;
    if (m[1] === 'job_starter') starter = m[2];
    else privileged = /^(true|1|yes|on)$/i.test(m[2]!);
  }
  return { ...(starter !== undefined ? { starter } : {}), privileged };
}

/** The KEY=value lines install.sh fills in at the top of the starter. */
function starterSetting(text: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1];
}

/** NSS's answer, or undefined for any failure: doctor reports what it finds, it does not stop. */
const tryNss = <T>(p: Promise<T | undefined>): Promise<T | undefined> => p.catch(() => undefined);

/** How the starter's lines name it: pbs_mom's $job_starter, or the runner job_submit.lua wraps every VM job's script in. */
const STARTER_ROLE = { torque: 'which pbs_mom runs to start every job', slurm: "which every VM job's batch script runs first (job_submit.lua wraps it)" } as const;

function checkStarterFile(c: Config, starter: string): CheckResult[] {
  const role = STARTER_ROLE[c.batch.system];
  const reinstall = c.batch.system === 'slurm' ? 'install.sh --slurm' : 'install.sh';
  const why = (() => {
    try {
      return untrustedResolved(starter);
    } catch (e) {
      return `it cannot be examined: ${(e as Error).message}`;
    }
  })();
  if (why) {
    return [r('FAIL', `${starter}, ${role}: ${why}`, `chown root:root ${starter} && chmod 0755 ${starter}, and make every directory above it root's and not writable by group or others (${reinstall} does)`)];
  }
  const text = readFileSync(starter, 'utf8');
  const jobDir = starterSetting(text, 'JOB_DIR');
  const missing = ['NODE', 'BUNDLE'].map((k) => starterSetting(text, k)).find((p) => !p || !existsSync(p));
  if (missing !== undefined) return [r('FAIL', `${starter} runs ${missing || '(nothing)'}, which does not exist: VM jobs would fail to start`, `run ${reinstall} again, e.g. after moving Node.js or the program`)];
  if (!jobDir || resolve(jobDir) !== resolve(c.paths.job_dir)) {
    return [r('FAIL', `${starter} looks for VM sockets under ${jobDir ?? '(nothing)'}, not [paths] job_dir ${c.paths.job_dir}: VM jobs would run on the host`, `run ${reinstall} again after changing [paths] job_dir`)];
  }
  if (c.batch.system === 'slurm') return [r('ok', `VM jobs' scripts start through ${starter} (root's; they run in VM 0)`)];
  const site = starterSetting(text, 'SITE_STARTER');
  return [r('ok', `pbs_mom starts jobs through ${starter} (root's; VM jobs run in VM 0${site ? `, other jobs through the site's ${site}` : ''})`)];
}

async function checkAccount(c: Config): Promise<CheckResult[]> {
  const user = c.launch.user;
  const pw = await tryNss(passwdOf(c, user));
  if (!pw) {
    return [r('FAIL', `the launch account ${user} ([launch] user) does not exist; qemu cannot be started`, `run install.sh, or: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin ${user}`)];
  }
  const { uid, gid } = pw;
  if (uid === 0) return [r('FAIL', `the launch account ${user} has uid 0; qemu would run as root`, `give ${user} its own uid (userdel ${user}, then run install.sh)`)];
  const out = [r('ok', `launch account ${user} (uid ${uid})`)];
  let kvm;
  try {
    kvm = statSync('/dev/kvm');
  } catch {
    return [...out, r('warn', '/dev/kvm does not exist: VMs boot with TCG (about 10x slower)', 'load kvm_intel or kvm_amd, and enable virtualisation in the BIOS (or for a VM, nested virtualisation)')];
  }
  const grp = await tryNss(groupOf(c, String(kvm.gid)));
  const inGroup = gid === kvm.gid || (grp?.members ?? []).includes(user);
  const can = (kvm.uid === uid && (kvm.mode & 0o600) === 0o600) || (inGroup && (kvm.mode & 0o060) === 0o060) || (kvm.mode & 0o006) === 0o006;
  if (!can) {
    const g = grp?.group ?? String(kvm.gid);
    out.push(r('warn', `${user} cannot open /dev/kvm (mode ${(kvm.mode & 0o777).toString(8)}, group ${g}): VMs boot with TCG (about 10x slower)${c.launch.allow_tcg ? '' : ', and [launch] allow_tcg = false refuses that'}`, `usermod -aG ${g} ${user} (install.sh adds it to kvm)`));
  } else out.push(r('ok', `${user} can open /dev/kvm`));
  return out;
}

// Fails when (Torque) mom_priv/config has no $job_starter of ours (VM jobs would
// run on the host), or (Slurm) the runner job_submit.lua names is not on this
// node; when mom_priv/config has $job_starter_run_privileged (the starter would run as root
// with the job's environment), when the starter or a directory above it is not
// root's alone or runs what is not there, when the launch account is missing
// or is root, or qemu-system is missing. Warns when the launch account cannot
// open /dev/kvm (TCG).
export async function checkLaunch(ctx: DoctorContext): Promise<CheckResult[]> {
  const c = ctx.config!;
  const out: CheckResult[] = c.batch.system === 'slurm' ? checkSlurmRunner(ctx) : checkJobStarter(c);
  out.push(...(await checkAccount(c)));
  if (!existsSync(c.tools.qemu_system)) {
    out.push(r('FAIL', `${c.tools.qemu_system} ([tools] qemu_system) is not installed; VMs cannot boot`, 'install qemu-system-x86 (Debian) or qemu-kvm (RHEL), or set [tools] qemu_system'));
  } else out.push(r('ok', `${c.tools.qemu_system} is there`));
  if (!existsSync(c.tools.setpriv)) {
    out.push(r('FAIL', `${c.tools.setpriv} ([tools] setpriv) is not installed; qemu cannot be started as ${c.launch.user}`, 'install util-linux (setpriv), or set [tools] setpriv'));
  }
  if (c.launch.network === 'bridge') out.push(checkBridge(c));
  return out;
}

// [batch] system = slurm: the runner job_submit.lua names (RUNNER), else the
// one beside the Prolog's program, as the slurm check found them. Fails as
// the Torque starter does; warns when the slurm check could not name one.
function checkSlurmRunner(ctx: DoctorContext): CheckResult[] {
  const runner = ctx.slurmRunner;
  if (!runner) return [r('warn', "cannot tell which vtorque-slurm-run VM jobs start through: the slurm check found neither our job_submit.lua nor our Prolog", 'fix the slurm check first (install.sh --slurm)')];
  if (!existsSync(runner)) return [r('FAIL', `${runner}, which every VM job's batch script runs first, does not exist on this node: VM jobs would fail to start`, 'run install.sh --slurm on this node')];
  return checkStarterFile(ctx.config!, runner);
}

function checkJobStarter(c: Config): CheckResult[] {
  const out: CheckResult[] = [];
  const momConfig = join(c.paths.torque_home, 'mom_priv', 'config');
  let text = '';
  try {
    text = readFileSync(momConfig, 'utf8');
  } catch {
    /* judged as "no $job_starter" below */
  }
  const js = readJobStarter(text);
  if (js.privileged) {
    out.push(r('FAIL', `${momConfig} sets $job_starter_run_privileged: pbs_mom would run the job starter as root with the job's environment`, `remove that line from ${momConfig}, then kill -HUP the pbs_mom`));
  }
  if (!js.starter) {
    out.push(r('FAIL', `${momConfig} has no $job_starter: #VM jobs' scripts would run on the host, not in their VM`, 'run install.sh (it adds $job_starter and chains a site\'s own)'));
  } else if (!js.starter.endsWith('/vtorque-starter')) {
    out.push(r('FAIL', `${momConfig} starts jobs through ${js.starter}, not vtorque's starter: #VM jobs' scripts would run on the host`, 'run install.sh: it keeps that starter and runs it for non-VM jobs'));
  } else if (!existsSync(js.starter)) {
    out.push(r('FAIL', `${momConfig} starts jobs through ${js.starter}, which does not exist: every job would fail to start`, 'run install.sh again'));
  } else out.push(...checkStarterFile(c, js.starter));
  return out;
}

// network = bridge: the prologue makes a tap per VM with [tools] ip and puts it on [launch] bridge.
function checkBridge(c: Config): CheckResult {
  if (!existsSync(c.tools.ip)) return r('FAIL', `[launch] network = bridge, and ${c.tools.ip} ([tools] ip) is not installed: no tap device can be made`, 'install iproute2, or set [tools] ip');
  if (!existsSync(`/sys/class/net/${c.launch.bridge}/bridge`)) {
    return r('FAIL', `[launch] bridge ${c.launch.bridge} is not a bridge on this node`, `create it (ip link add ${c.launch.bridge} type bridge; ip link set ${c.launch.bridge} up, with the node's uplink in it), or name another`);
  }
  return r('ok', `bridge ${c.launch.bridge} is there; taps are made with ${c.tools.ip}`);
}
