// What slurmd runs as Prolog and Epilog (`vtorque-prologue slurm-prolog`,
// `slurm-epilog`): no argv, SLURM_* variables, no PATH, no HOME. The Prolog
// reads the job script from slurmctld itself (never the job's comment, which
// its owner can rewrite while it waits) and runs the same pipeline as Torque's
// prologue for this node's VMs. The non-VM path stays light: the environment,
// three keys of the ini, one scontrol call; the rest loads only for VM jobs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processIO, type HookIO } from '../core/io.js';
import type { Config } from '../config/schema.js';
import { HEADER_CAP, scanDirectives, type ScanResult } from '../request/directives.js';
import { EXIT_NODE_FAULT, EXIT_RUN, JobFault, isVtorqueError, type ExitCode } from '../core/errors.js';
import { unwrapScript } from './wrap.js';
import { heavy } from '../lazy.js';
import { kindOf, peekSlurm, readSlurmEnv, slurmTools, type SlurmHook } from './contract.js';
import { batchScript, expandHosts, type SlurmCall } from './scontrol.js';
import type { SlurmJob } from './engine.js';
import type { Logger } from '../report/log.js';

export async function runSlurmHook(hook: SlurmHook, argv: readonly string[], configFile: string, io: HookIO = processIO, processEnv: NodeJS.ProcessEnv = process.env): Promise<ExitCode> {
  const kind = kindOf(hook);
  let read: ReturnType<typeof readSlurmEnv>;
  try {
    read = readSlurmEnv(hook, argv, processEnv);
  } catch (e) {
    // No job to name: slurmd drains the node on our non-zero exit ("Prolog error"), and its log has this.
    if (!isVtorqueError(e)) throw e;
    io.err(`vtorque: ${e.message}\n`);
    return EXIT_NODE_FAULT;
  }
  const { jobId, user, env } = read;
  const job: SlurmJob = { hook: kind, jobId, user, env, partition: processEnv.SLURM_JOB_PARTITION || undefined };
  let config: Config | undefined;
  let scriptDir: string | undefined;
  try {
    if (kind === 'prologue') {
      const peek = peekSlurm(configFile);
      const c: SlurmCall = { tools: peek, slurmConf: env.slurmConf };
      const stored = await batchScript(c, jobId, HEADER_CAP);
      // job_submit.lua put its three lines before a VM job's script (wrap.ts): the #VM lines are behind them.
      const unwrapped = stored === undefined ? undefined : unwrapScript(stored);
      const script = unwrapped?.script;
      const scan: ScanResult | undefined = script === undefined ? undefined : scanDirectives(script.slice(0, HEADER_CAP), script.length > HEADER_CAP);
      const forced = job.partition !== undefined && peek.vmQueues.includes(job.partition);
      if ((scan === undefined || scan.vmLines === 0) && !forced) {
        io.out(`vtorque: not a VM job${script === undefined ? ' (no job script)' : ''}\n`);
        return EXIT_RUN;
      }
      const { loadConfig } = await import('../config/load.js');
      const loaded = loadConfig(configFile);
      config = loaded.config;
      // Booted VMs with a script that is not wrapped: the job would run on the host, beside its VMs. Refused before anything is made.
      if (config.launch.start && script !== undefined && !unwrapped?.wrapped) throw notWrapped(jobId);
      // The pipeline names the script as its source (a refused image's hints read it again): a root-only copy for this run.
      scriptDir = mkdtempSync('/tmp/vtorque-slurm-');
      const scriptPath = join(scriptDir, 'script');
      writeFileSync(scriptPath, script ?? '', { mode: 0o600 });
      await describeJob(job, config);
      const { prepareVmJob, slurmEngine } = await heavy();
      const engine = slurmEngine(job, processEnv);
      const { args } = engine.hookJob(kind, argv);
      const said: string[] = [];
      const cfg = config;
      // Only for a prepared job: a refused one's directory is gone, and its exit is 0 as well (engine.ts).
      return await prepareVmJob({
        args, env, engine, config, configWarnings: loaded.warnings, scan: scan ?? scanDirectives(''), scriptPath, forcedByQueue: forced, io: teeOut(io, said),
        prepared: (log) => leaveSummary(cfg, jobId, { uid: env.uid, gid: env.gid }, said, io, log),
      });
    }
    const { loadConfig } = await import('../config/load.js');
    config = loadConfig(configFile).config;
    job.exitCode = /^-?[0-9]+$/.test(processEnv.SLURM_JOB_EXIT_CODE ?? '') ? Number(processEnv.SLURM_JOB_EXIT_CODE) : undefined;
    // The job-ended marker first (a Prolog still at work), then the cleanup only if the job left anything here.
    const { epilogueFront } = await import('../pipeline/ended.js');
    const { marked, done } = epilogueFront(config, jobId);
    if (done) return EXIT_RUN;
    const { cleanUpJob, slurmEngine } = await heavy();
    const engine = slurmEngine(job, processEnv);
    const { args } = engine.hookJob(kind, argv);
    return await cleanUpJob({ args, env, engine, config, io, marked });
  } catch (e) {
    const { handleFailure, slurmEngine } = await heavy();
    const engine = slurmEngine(job, processEnv);
    const args = engine.hookJob(kind, []).args;
    return handleFailure(e, { kind, engine, args, env, config, configFile, io, source: scriptDir ? join(scriptDir, 'script') : undefined });
  } finally {
    if (scriptDir) rmSync(scriptDir, { recursive: true, force: true });
  }
}

/** io whose out lines are also kept: the Prolog's output reaches no user, so the TaskProlog prints them (leaveSummary). */
function teeOut(io: HookIO, said: string[]): HookIO {
  return { ...io, out: (text: string) => { said.push(text); io.out(text); } };
}

/**
 * The Prolog's vtorque: lines, for conf/slurm/task-prolog to print into the
 * job's output (slurmd opens that file after the Prolog, truncating it):
 * <job_dir>/<jobid>/summary. Every line is one of ours (report/user.ts
 * line()), one line each. Not written is only a missing summary: slurmd's log
 * has why, and the job runs.
 *
 * The job owner's alone, mode 0400: the lines name the image (a user's private
 * path included) and the VMs, and on a site where every user shares a group
 * (users) a group-readable file would show them to everyone. The TaskProlog
 * runs as the owner, so owning it is the one ACL-free way it can read a file
 * no one else can. Owning it gives the user nothing: the directory is root's
 * (they cannot rename, replace or add entries there), root never reads the
 * file back, and whatever they write into it only prints into their own
 * output, one "print" line per line. The directory lets others traverse, not
 * list (cache/jobdir.ts), so the TaskProlog reaches the file and no one else
 * reads it.
 */
export async function leaveSummary(config: Config, jobId: string, owner: { uid: number; gid: number }, said: readonly string[], io: HookIO, log?: Logger): Promise<void> {
  // Loaded here: node:crypto (atomic.ts) costs a non-VM job's Prolog ~8 ms.
  const [{ writeFileAtomic }, { ownFile }] = await Promise.all([import('../tools/atomic.js'), import('../tools/safedir.js')]);
  const text = said.join('').split('\n').filter((l) => l.startsWith('vtorque: ')).map((l) => `${l}\n`).join('');
  const path = join(config.paths.job_dir, jobId, 'summary');
  try {
    // Root's and 0400 until it is handed over: never readable by anyone else on the way.
    writeFileAtomic(path, text, 0o400);
    ownFile(path, { uid: owner.uid, gid: owner.gid, mode: 0o400 });
    log?.child({ stage: 'summary' }).info({ path, uid: owner.uid }, 'summary left for the TaskProlog');
  } catch (e) {
    log?.child({ stage: 'summary' }).warn({ path, err: (e as NodeJS.ErrnoException).code ?? String((e as Error).message) }, 'the summary for the TaskProlog could not be written');
    io.err(`vtorque: job ${jobId}: the summary for the TaskProlog could not be written in ${join(config.paths.job_dir, jobId)} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); the job runs without our lines in its output\n`);
  }
}

/** A VM job whose script job_submit.lua did not wrap cannot run in its VM. */
function notWrapped(jobId: string): JobFault {
  return new JobFault(`job ${jobId} cannot run in its VM: its script was not wrapped at submission`, [{
    id: 'slurm-wrap',
    where: 'job_submit.lua',
    message: "the script does not start with job_submit.lua's lines, so Slurm would run it on the host, not in VM 0",
    fix: "(admin) slurm.conf needs JobSubmitPlugins=lua with vtorque's job_submit.lua next to it (install.sh --slurm), then scontrol reconfigure; (you) then resubmit the job",
  }]);
}

/** What the environment does not name: the job's group (NSS, by the gid slurmd gave) and its hosts (scontrol show hostnames). */
async function describeJob(job: SlurmJob, config: Config): Promise<void> {
  const { groupOf } = await import('../tools/nss.js');
  const c: SlurmCall = { tools: slurmTools(config), slurmConf: job.env.slurmConf };
  const [group, hosts] = await Promise.all([
    groupOf(config, String(job.env.gid)).then((g) => g?.group),
    job.env.nodeList ? expandHosts(c, job.env.nodeList) : Promise.resolve(undefined),
  ]);
  job.group = group;
  job.hosts = hosts;
}
