// doctor's `timeouts` check: whether the deadlines fit each other and the
// accelerator this node really has. A VM job's prologue must finish its image
// work and its VMs' boot within [timeouts] total, and the batch system must
// let it run that long: Torque kills it at $prologalarm - 10 s, Slurm at
// PrologEpilogTimeout (compared by the slurm check, neededPrologEpilogTimeout).
// A budget too short for a TCG boot fails every slow boot as the user's fault
// (exit 1, vm-boot); one past the batch system's alarm has the prologue killed
// without a word. Each line names the lines to change and to what.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { neededPrologEpilogTimeout } from '../slurm/doctor.js';
import { neededPrologAlarm, readPrologAlarm, PROLOG_ALARM_MARGIN, type PrologAlarm } from '../torque/mom-config.js';
import type { Accel } from '../launch/kvm.js';
import type { CheckResult, DoctorContext } from './checks.js';

const CHECK = 'timeouts';
const r = (status: CheckResult['status'], message: string, fix?: string, extra: Partial<CheckResult> = {}): CheckResult => ({ check: CHECK, status, message, ...(fix ? { fix } : {}), ...extra });

/**
 * The times the budget is made of, and where they come from.
 * - boot: a Debian guest booting through cloud-init until its agent answers.
 *   TCG: 70-300 s on the 2-core build machine (the boot guest of
 *   test/launch-boot.test.ts; 240-307 s on loaded install runs there). KVM:
 *   seconds where KVM works (doc/admin.md's example, 12.4 s); 60 s leaves
 *   room for cloud-init's own steps.
 * - launch: one libguestfs appliance launch, when the guestfs check did not
 *   measure it: TCG 90 s (88.0 s in a doctor run of install.sh on the build
 *   machine; 15.5 s when idle), KVM 10 s.
 * A new image costs about 1.2 launches for its check (bench/verify's
 * target: a cold verification within 1.2 bare launches), which takes its
 * kernel out for direct boot in the same appliance; one more with [seed]
 * media = inject.
 */
export const BUDGET = {
  bootSeconds: { kvm: 60, tcg: 300 } as Record<Accel, number>,
  launchSeconds: { kvm: 10, tcg: 90 } as Record<Accel, number>,
  launchesPerCheck: 1.2,
};

/** The boot wait ends 10 s before [timeouts] total (src/pipeline/prologue.ts, hardStop); a job whose image is cached spends a few seconds before it. */
const BEFORE_DEADLINE = 10;
const WARM_PREP = 5;

const up10 = (n: number) => Math.ceil(n / 10) * 10;

interface Found {
  vms: Accel;
  guestfs: Accel;
  /** Where the VMs' accelerator comes from, for the message. */
  from: string;
  launchSeconds: number;
  launchFrom: string;
}

/** What the kvm and guestfs checks found; without them, the config, the probe's kept answer, or TCG as the worst case. */
async function found(ctx: DoctorContext): Promise<Found> {
  const c = ctx.config!;
  const { GUESTFS_SHAPE, launchShape, memoisedKvm } = await import('../launch/kvm.js');
  const pick = (setting: Config['launch']['accel'], key: string, checked: Accel | undefined, memo: () => Accel | undefined): [Accel, string] => {
    if (setting !== 'auto') return [setting, `${key} = ${setting}`];
    if (checked) return [checked, 'as the kvm check found'];
    const m = memo();
    return m ? [m, 'as the last KVM probe found'] : ['tcg', 'assumed: the kvm check did not run, and no probe answer is kept'];
  };
  const [vms, from] = pick(c.launch.accel, '[launch] accel', ctx.accel?.vms, () => memoisedKvm(c, launchShape(c))?.accel);
  const [guestfs] = pick(c.guestfs.accel, '[guestfs] accel', ctx.accel?.guestfs, () => memoisedKvm(c, GUESTFS_SHAPE)?.accel);
  const g = ctx.guestfsLaunch;
  const measured = g !== undefined && g.accel === guestfs;
  return { vms, guestfs, from, launchSeconds: measured ? g.ms / 1000 : BUDGET.launchSeconds[guestfs], launchFrom: measured ? 'measured by the guestfs check' : 'an estimate: the guestfs check did not run' };
}

/** Torque's $prologalarm as mom_priv/config sets it, and how to name it. */
function prologAlarm(c: Config): { alarm: PrologAlarm; file: string; where: string } {
  const file = join(c.paths.torque_home, 'mom_priv', 'config');
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    /* pbs_mom then runs with its default */
  }
  const alarm = readPrologAlarm(text ?? '');
  const where = alarm.line !== undefined ? `${file} line ${alarm.line}: ${alarm.text}` : `${text === undefined ? `${file} does not exist` : `${file} does not set it`}: Torque's default`;
  return { alarm, file, where };
}

// Fails when Torque's $prologalarm (mom_priv/config, 300 s by default) does
// not leave [timeouts] total + 20 s: pbs_mom kills the prologue 10 s before
// it, before our own deadline can requeue the job with a reason. Warns when
// [launch] boot, or what [timeouts] total leaves of it, is shorter than a boot
// with the accelerator the kvm check found (TCG 300 s, KVM 60 s); and when a
// job on an image new to the node (its check, which takes out its kernel, in
// libguestfs appliance launches as long as the guestfs check measured) and
// such a boot do not fit in [timeouts] total. On a Slurm node the slurm check
// compares PrologEpilogTimeout; the fixes here name the value it would need.
export async function checkTimeouts(ctx: DoctorContext): Promise<CheckResult[]> {
  const c = ctx.config!;
  const f = await found(ctx);
  const ini = ctx.configFile;
  const torque = c.batch.system === 'torque' ? prologAlarm(c) : undefined;
  const out: CheckResult[] = [];
  const data = { vms: f.vms, guestfs: f.guestfs, launchSeconds: Math.round(f.launchSeconds), boot: c.launch.boot, total: c.timeouts.total, ...(torque ? { prologalarm: torque.alarm.seconds } : {}) };

  // What this node needs: a boot of its accelerator, after a new image's libguestfs work.
  const bootNeed = BUDGET.bootSeconds[f.vms];
  const inject = c.seed.media === 'inject' ? 1 : 0;
  const coldSeconds = Math.round((BUDGET.launchesPerCheck + inject) * f.launchSeconds);
  // What to set: a boot long enough, and a total that holds a new image's work, that boot and the 10 s the wait leaves.
  const boot = c.launch.start ? Math.max(c.launch.boot, bootNeed) : 0;
  const total = Math.max(c.timeouts.total, up10(coldSeconds + boot + BEFORE_DEADLINE), c.launch.start ? up10(boot + BEFORE_DEADLINE + WARM_PREP) : 0);
  /** The lines to change so that everything fits, given total. */
  const change = (t: number, b?: number): string => {
    const lines = [...(b !== undefined && b !== c.launch.boot ? [`[launch] boot = ${b}`] : []), ...(t !== c.timeouts.total ? [`[timeouts] total = ${t}`] : [])];
    const batch = c.batch.system === 'torque'
      ? (torque!.alarm.seconds < t + PROLOG_ALARM_MARGIN ? `; and in ${torque!.file}: $prologalarm ${t + PROLOG_ALARM_MARGIN}, then kill -HUP the pbs_mom` : '')
      : `; and in slurm.conf PrologEpilogTimeout=${neededPrologEpilogTimeout({ ...c, timeouts: { ...c.timeouts, total: t } })} or more, then scontrol reconfigure`;
    return `${lines.length > 0 ? `set in ${ini}: ${lines.join(', ')}` : `keep ${ini} as it is`}${batch}`;
  };

  if (torque) {
    const need = neededPrologAlarm(c);
    if (torque.alarm.seconds < need) {
      out.push(r('FAIL', `$prologalarm is ${torque.alarm.seconds} s (${torque.where}), and [timeouts] total is ${c.timeouts.total} s: pbs_mom kills the prologue at ${torque.alarm.seconds - 10} s ($prologalarm - 10 s), before its own deadline (total, then up to 5 s to report) can requeue the job and say why`,
        `set in ${torque.file}: $prologalarm ${need} (then kill -HUP the pbs_mom), or in ${ini}: [timeouts] total = ${Math.max(10, torque.alarm.seconds - PROLOG_ALARM_MARGIN)}`, { data }));
    } else out.push(r('ok', `[timeouts] total ${c.timeouts.total} s fits $prologalarm ${torque.alarm.seconds} s (${torque.where}; it needs total + ${PROLOG_ALARM_MARGIN} s)`, undefined, { data }));
  }

  if (!c.launch.start) {
    // No boot: a new image's libguestfs work is all the prologue spends.
    if (coldSeconds + BEFORE_DEADLINE > c.timeouts.total) {
      out.push(r('warn', `a job on an image new to this node spends about ${coldSeconds} s in libguestfs (${f.guestfs.toUpperCase()}, ${f.launchSeconds.toFixed(1)} s a launch, ${f.launchFrom}), more than [timeouts] total ${c.timeouts.total} s allows: it is requeued at the deadline and the node taken offline`,
        change(up10(coldSeconds + BEFORE_DEADLINE + WARM_PREP)), { data }));
    }
    return out;
  }

  const window = Math.max(0, Math.min(c.launch.boot, c.timeouts.total - BEFORE_DEADLINE - WARM_PREP));
  const bootWhy = f.vms === 'tcg' ? `a TCG boot of a Debian guest through cloud-init takes 70-${bootNeed} s` : `a KVM boot takes seconds (${bootNeed} s allowed)`;
  if (window < bootNeed) {
    const cut = window < c.launch.boot ? ` ([launch] boot is ${c.launch.boot} s, but [timeouts] total ${c.timeouts.total} s ends the wait ${BEFORE_DEADLINE} s before it)` : ` ([launch] boot)`;
    // The prologue starts no boot with less than [launch] boot left (pipeline/prologue.ts, boot-time): a cut wait is no wait at all.
    const outcome = window < c.launch.boot
      ? 'the prologue starts no boot with less than [launch] boot left, so every VM job is requeued (exit 2, boot-time)'
      : 'slower boots fail their job (exit 1, vm-boot)';
    out.push(r('warn', `VMs boot with ${f.vms.toUpperCase()} here (${f.from}) and get ${window} s to answer${cut}; ${bootWhy}: ${outcome}`,
      change(total, boot), { data }));
  }
  if (coldSeconds + bootNeed + BEFORE_DEADLINE > c.timeouts.total) {
    out.push(r('warn', `a job on an image new to this node spends about ${coldSeconds} s in libguestfs before its VMs boot (its check, which takes out its kernel too, ${f.guestfs.toUpperCase()}, ${f.launchSeconds.toFixed(1)} s a launch, ${f.launchFrom}); with a ${f.vms.toUpperCase()} boot (up to ${bootNeed} s) that passes [timeouts] total ${c.timeouts.total} s: such a job is requeued ${coldSeconds + c.launch.boot + BEFORE_DEADLINE > c.timeouts.total ? 'before its VMs boot (boot-time: less than [launch] boot is left; the node stays online and the next start finds the image cached)' : 'at the deadline and the node taken offline'}`,
      change(total, boot), { data }));
  }
  if (out.every((x) => x.status === 'ok')) {
    out.push(r('ok', `[launch] boot ${c.launch.boot} s and [timeouts] total ${c.timeouts.total} s cover a ${f.vms.toUpperCase()} boot (up to ${bootNeed} s), after a new image's libguestfs work (about ${coldSeconds} s, ${f.guestfs.toUpperCase()})`, undefined, { data }));
  }
  return out;
}
