// `vtorque-prologue doctor`: runs every node check, prints one line each with
// a fix, and with --clear brings the node back into scheduling once it is
// healthy, if and only if vtorque took it out. Exit 0 healthy, 1 problems
// found, 2 doctor itself could not run.
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { EXIT_JOB_FAULT, EXIT_NODE_FAULT, EXIT_RUN, type ExitCode } from '../core/errors.js';
import type { HookIO } from '../core/io.js';
import {
  CHECK_IDS, RUN_ORDER, checkConfig, checkDirectories, checkFreeSpace, checkGuestfs, checkKvm, checkMomPriv, checkTools, checkTorque, otherBatchSystems,
  type CheckId, type CheckResult, type DoctorContext,
} from './checks.js';
import { checkLaunch } from './launch.js';
import { checkTimeouts } from './timeouts.js';
import { checkSlurm, clearSlurmNode, DRAINED_BY_US } from './slurm.js';

export interface DoctorOptions {
  configFile: string;
  json: boolean;
  clear: boolean;
  skip: readonly CheckId[];
  io: HookIO;
  /** SLURM_CONF and SLURMD_NODENAME for the slurm check; process.env when absent. */
  env?: NodeJS.ProcessEnv;
}

const RUNNERS: Record<Exclude<CheckId, 'config'>, (ctx: DoctorContext) => CheckResult[] | Promise<CheckResult[]>> = {
  tools: checkTools,
  guestfs: checkGuestfs,
  kvm: checkKvm,
  timeouts: checkTimeouts,
  dirs: checkDirectories,
  space: checkFreeSpace,
  mom_priv: checkMomPriv,
  slurm: checkSlurm,
  launch: checkLaunch,
  torque: checkTorque,
};

export interface ClearResult {
  status: 'onlined' | 'left-alone' | 'not-healthy' | 'failed';
  message: string;
  /** After onlined: the command that has pbs_sched look at the node now rather than at its next cycle. */
  next?: string;
}

/**
 * What starts a scheduling cycle at once. pbs_server runs pbs_sched every
 * scheduler_iteration seconds (PBS_SCHEDULE_CYCLE, 600, in
 * src/include/server_limits.h; src/server/pbsd_main.c main_loop), and a node
 * coming back online is no event that starts one; setting the server's
 * "scheduling" attribute to true is (its action routine poke_scheduler in
 * src/server/svr_func.c sets SCH_SCHEDULE_CMD). The attribute is NO_USER_SET:
 * an operator or manager may set it, as for pbsnodes -c. qmgr is installed
 * beside qstat.
 */
export function scheduleNowCommand(config: NonNullable<DoctorContext['config']>): string {
  return `${join(dirname(config.tools.qstat), 'qmgr')} -c "set server scheduling = true"`;
}

export async function runChecks(ctx: DoctorContext, skip: readonly CheckId[]): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  // Every other check reads the config, so it cannot be skipped; it is cheap.
  results.push(...checkConfig(ctx));
  for (const id of RUN_ORDER) {
    if (id === 'config') continue;
    // The other batch system's checks are not this node's: not run, not listed.
    if (ctx.config && otherBatchSystems(ctx.config, id)) continue;
    if (skip.includes(id)) {
      results.push({ check: id, status: 'skip', message: 'skipped (--skip)' });
      continue;
    }
    if (!ctx.config) {
      results.push({ check: id, status: 'skip', message: 'needs a valid config' });
      continue;
    }
    const t0 = performance.now();
    try {
      results.push(...(await RUNNERS[id](ctx)));
    } catch (e) {
      // A check that throws found something it did not expect: that is a problem on the node, said as such.
      results.push({ check: id, status: 'FAIL', message: `the check itself failed: ${(e as Error).message}`, fix: 'run it again; if it persists, report it with this line', ms: Math.round(performance.now() - t0) });
    }
  }
  return results;
}

/** Our own drain of a Slurm node is the problem --clear ends, not one that stops it. */
const drainedByUs = (x: CheckResult): boolean => x.data?.[DRAINED_BY_US] === true;

async function clearNode(ctx: DoctorContext, results: readonly CheckResult[]): Promise<ClearResult> {
  const problems = results.filter((x) => x.status === 'FAIL' && !drainedByUs(x)).length;
  if (problems > 0 || !ctx.config) {
    return { status: 'not-healthy', message: `node left as it is: ${problems} problem${problems === 1 ? '' : 's'} remain${problems === 1 ? 's' : ''}; fix ${problems === 1 ? 'it' : 'them'} and run doctor --clear again` };
  }
  if (ctx.config.batch.system === 'slurm') return clearSlurmNode(ctx);
  const p = await import('../torque/pbsnodes.js');
  try {
    const o = await p.onlineNode(p.pbsnodesSettings(ctx.config));
    const next = scheduleNowCommand(ctx.config);
    return o.action === 'onlined'
      ? { status: 'onlined', message: `node ${o.node} is back online; our note "${o.note}" is cleared. A requeued job may wait for pbs_sched's next cycle (scheduler_iteration, 600 s by default); to start one now, as a Torque operator: ${next}`, next }
      : { status: 'left-alone', message: `node ${o.node} left as it is: ${o.why}` };
  } catch (e) {
    return { status: 'failed', message: `node could not be brought online: ${(e as Error).message}` };
  }
}

const LABEL: Record<CheckResult['status'], string> = { ok: 'ok', warn: 'WARN', FAIL: 'FAIL', skip: 'skip' };

export function formatLine(x: CheckResult): string {
  return `${LABEL[x.status].padEnd(5)} ${x.check.padEnd(9)} ${x.message}${x.fix && x.status !== 'ok' ? `. Fix: ${x.fix}` : ''}`;
}

export async function doctor(opts: DoctorOptions): Promise<ExitCode> {
  const t0 = performance.now();
  const ctx: DoctorContext = { configFile: opts.configFile, env: opts.env ?? process.env };
  const results = await runChecks(ctx, opts.skip);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    results.push({ check: 'doctor', status: 'warn', message: `running as uid ${process.getuid()}, not root: the prologue runs as root, so some checks may fail here only for lack of permission`, fix: 'run doctor as root' });
  }
  const clear = opts.clear ? await clearNode(ctx, results) : undefined;
  // A node --clear just resumed is no longer drained by us.
  const problems = results.filter((x) => x.status === 'FAIL' && !(clear?.status === 'onlined' && drainedByUs(x))).length;
  const warnings = results.filter((x) => x.status === 'warn').length;
  const ms = Math.round(performance.now() - t0);
  if (opts.json) {
    opts.io.out(JSON.stringify({ node: hostname(), config: opts.configFile, healthy: problems === 0, problems, warnings, ms, checks: results, ...(clear ? { clear } : {}) }, null, 2) + '\n');
  } else {
    const lines = [`vtorque doctor on ${hostname()}, config ${opts.configFile}`, ...results.map(formatLine)];
    if (clear) lines.push(`${clear.status === 'onlined' ? 'ok' : clear.status === 'left-alone' ? 'ok' : 'FAIL'}`.padEnd(5) + ` ${'clear'.padEnd(9)} ${clear.message}`);
    lines.push(problems === 0
      ? `healthy${warnings ? `, ${warnings} warning${warnings === 1 ? '' : 's'}` : ''} (${(ms / 1000).toFixed(1)} s)`
      : `${problems} problem${problems === 1 ? '' : 's'}${warnings ? `, ${warnings} warning${warnings === 1 ? '' : 's'}` : ''} (${(ms / 1000).toFixed(1)} s)`);
    opts.io.out(lines.join('\n') + '\n');
  }
  return problems === 0 && clear?.status !== 'failed' ? EXIT_RUN : EXIT_JOB_FAULT;
}

/** Parses doctor's own options; undefined and a message when they are wrong (exit 2). */
export function parseDoctorArgs(args: readonly string[]): { json: boolean; clear: boolean; skip: CheckId[]; help: boolean } | { error: string } {
  let json = false;
  let clear = false;
  let help = false;
  const skip: CheckId[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--json') json = true;
    else if (a === '--clear') clear = true;
    else if (a === '--help' || a === '-h') help = true;
    else if (a === '--skip' || a.startsWith('--skip=')) {
      const v = a === '--skip' ? args[++i] : a.slice('--skip='.length);
      if (!v) return { error: '--skip needs a list of checks' };
      for (const id of v.split(',').map((x) => x.trim()).filter(Boolean)) {
        if (id === 'config' || !(CHECK_IDS as readonly string[]).includes(id)) {
          return { error: `--skip: ${JSON.stringify(id)} is not a check that can be skipped; checks: ${CHECK_IDS.filter((c) => c !== 'config').join(', ')}` };
        }
        skip.push(id as CheckId);
      }
    } else return { error: `doctor: unknown option ${JSON.stringify(a)}` };
  }
  return { json, clear, skip, help };
}

export async function doctorCommand(args: readonly string[], configFile: string, io: HookIO, help: string): Promise<ExitCode> {
  const o = parseDoctorArgs(args);
  if ('error' in o) {
    io.err(`vtorque: ${o.error}\nRun 'vtorque-prologue help doctor'.\n`);
    return EXIT_NODE_FAULT;
  }
  if (o.help) {
    io.out(help + '\n');
    return EXIT_RUN;
  }
  try {
    return await doctor({ configFile, json: o.json, clear: o.clear, skip: o.skip, io });
  } catch (e) {
    io.err(`vtorque: doctor could not run: ${(e as Error).message}\n`);
    return EXIT_NODE_FAULT;
  }
}
