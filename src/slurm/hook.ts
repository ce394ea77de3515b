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
import { EXIT_NODE_FAULT, EXIT_RUN, isVtorqueError, type ExitCode } from '../core/errors.js';
import { heavy } from '../lazy.js';
import { layoutOf, leasePath } from '../cache/layout.js';
import { kindOf, peekSlurm, readSlurmEnv, slurmTools, type SlurmHook } from './contract.js';
import { batchScript, expandHosts, type SlurmCall } from './scontrol.js';
import type { SlurmJob } from './engine.js';

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
      const script = await batchScript(c, jobId, HEADER_CAP);
      const scan: ScanResult | undefined = script === undefined ? undefined : scanDirectives(script.slice(0, HEADER_CAP), script.length > HEADER_CAP);
      const forced = job.partition !== undefined && peek.vmQueues.includes(job.partition);
      if ((scan === undefined || scan.vmLines === 0) && !forced) {
        io.out(`vtorque: not a VM job${script === undefined ? ' (no job script)' : ''}\n`);
        return EXIT_RUN;
      }
      const { loadConfig } = await import('../config/load.js');
      const loaded = loadConfig(configFile);
      config = loaded.config;
      // The pipeline names the script as its source (a refused image's hints read it again): a root-only copy for this run.
      scriptDir = mkdtempSync('/tmp/vtorque-slurm-');
      const scriptPath = join(scriptDir, 'script');
      writeFileSync(scriptPath, script ?? '', { mode: 0o600 });
      await describeJob(job, config);
      const { prepareVmJob, slurmEngine } = await heavy();
      const engine = slurmEngine(job, processEnv);
      const { args } = engine.hookJob(kind, argv);
      return await prepareVmJob({ args, env, engine, config, configWarnings: loaded.warnings, scan: scan ?? scanDirectives(''), scriptPath, forcedByQueue: forced, io });
    }
    const { loadConfig } = await import('../config/load.js');
    config = loadConfig(configFile).config;
    job.exitCode = /^-?[0-9]+$/.test(processEnv.SLURM_JOB_EXIT_CODE ?? '') ? Number(processEnv.SLURM_JOB_EXIT_CODE) : undefined;
    // First, for every job: a Prolog still at work publishes after this and must learn that the job ended.
    const { markEnded } = await import('../pipeline/ended.js');
    let marked = true;
    try {
      markEnded(config, jobId);
    } catch {
      marked = false; // cleanUpJob tries again and logs why
    }
    const { job_dir, ramdisk_dir } = config.paths;
    const { existsSync } = await import('node:fs');
    if (marked && ![`${job_dir}/${jobId}`, `${ramdisk_dir}/${jobId}`, leasePath(layoutOf(config), jobId)].some((p) => existsSync(p))) return EXIT_RUN;
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
