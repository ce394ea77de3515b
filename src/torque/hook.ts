// What pbs_mom runs. The non-VM path lives here and must stay tiny: argv,
// two keys of the ini, the first 64 KiB of the job script, nothing else.
// Everything heavy (pino, yaml, the stages, Torque's engine for them: qstat,
// pbsnodes) is loaded only once a job turns out to want VMs, or something fails.
import { processIO, type HookIO } from '../core/io.js';
import { peekConfig } from '../config/peek.js';
import type { Config } from '../config/schema.js';
import { defaultScriptPath, parseJobArgs, readJobEnv, type JobArgs, type ScriptKind } from './contract.js';
import { readScriptHeader, scanDirectives } from '../request/directives.js';
import { EXIT_RUN, type ExitCode } from '../core/errors.js';
import { heavy } from '../lazy.js';

export async function runHook(kind: ScriptKind, argv: readonly string[], configFile: string, io: HookIO = processIO): Promise<ExitCode> {
  const env = readJobEnv(process.env);
  let args: JobArgs | undefined;
  let config: Config | undefined;
  try {
    args = parseJobArgs(kind, argv);
    if (kind === 'prologue' || kind === 'prologue-parallel') {
      const peek = peekConfig(configFile);
      const scriptPath = args.scriptPath ?? defaultScriptPath(peek.torqueHome, args.jobId);
      const header = readScriptHeader(scriptPath);
      const scan = header ? scanDirectives(header.text, header.truncated) : undefined;
      const forced = peek.vmQueues.includes(args.queue);
      // A sister has no script: only the job's attributes (qstat) can say whether it wants VMs.
      const sister = kind === 'prologue-parallel' && header === undefined;
      // Not a VM job: silent. pbs_mom appends a prologue's output to the job's .o, and most jobs on a
      // node are not VM jobs; a line of ours in each of their outputs is noise they did not ask for.
      if (!sister && (scan === undefined || scan.vmLines === 0) && !forced) return EXIT_RUN;
      const { loadConfig } = await import('../config/load.js');
      const loaded = loadConfig(configFile);
      config = loaded.config;
      const { prepareVmJob, torqueEngine } = await heavy();
      return await prepareVmJob({ args, env, engine: torqueEngine(process.env), config, configWarnings: loaded.warnings, scan, scriptPath, forcedByQueue: forced, io });
    }
    // Loaded here, not at startup: building the whole schema is not for the prologue's non-VM path.
    const { loadConfig } = await import('../config/load.js');
    config = loadConfig(configFile).config;
    // The job-ended marker first (qdel during the prologue), then the cleanup only if the job left anything here. Loaded here: the prologue's fast path has no use for it.
    const { epilogueFront } = await import('../pipeline/ended.js');
    const { marked, done } = epilogueFront(config, args.jobId);
    if (done) return EXIT_RUN;
    const { cleanUpJob, torqueEngine } = await heavy();
    return await cleanUpJob({ args, env, engine: torqueEngine(process.env), config, io, marked });
  } catch (e) {
    const { handleFailure, torqueEngine } = await heavy();
    return handleFailure(e, { kind, engine: torqueEngine(process.env), args, env, config, configFile, io });
  }
}
