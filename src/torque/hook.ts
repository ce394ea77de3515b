// What pbs_mom runs. The non-VM path lives here and must stay tiny: argv,
// the ini, the first 64 KiB of the job script, nothing else. Everything heavy
// (pino, execa, the stages) is imported only once a job turns out to want VMs.
import { existsSync } from 'node:fs';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { defaultScriptPath, parseJobArgs, readJobEnv, type JobArgs, type ScriptKind } from './contract.js';
import { readScriptHeader, scanDirectives } from './directives.js';
import { EXIT_RUN, type ExitCode } from './exit.js';

export interface HookIO {
  out: (text: string) => void;
  err: (text: string) => void;
}

export const processIO: HookIO = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

export async function runHook(kind: ScriptKind, argv: readonly string[], configFile: string, io: HookIO = processIO): Promise<ExitCode> {
  const env = readJobEnv(process.env);
  let args: JobArgs | undefined;
  let config: Config | undefined;
  try {
    args = parseJobArgs(kind, argv);
    const loaded = loadConfig(configFile);
    config = loaded.config;
    if (kind === 'prologue' || kind === 'prologue-parallel') {
      const scriptPath = args.scriptPath ?? defaultScriptPath(config.paths.torque_home, args.jobId);
      const header = readScriptHeader(scriptPath);
      const scan = header ? scanDirectives(header.text, header.truncated) : undefined;
      const forced = config.policy.vm_queues.includes(args.queue);
      if ((scan === undefined || scan.vmLines === 0) && !forced) {
        io.out(`vtorque: not a VM job${header ? '' : ' (no job script on this node)'}\n`);
        return EXIT_RUN;
      }
      const { prepareVmJob } = await import('../pipeline/prologue.js');
      return await prepareVmJob({ args, env, config, configWarnings: loaded.warnings, scan, scriptPath, forcedByQueue: forced, io });
    }
    if (!existsSync(`${config.paths.job_dir}/${args.jobId}`)) return EXIT_RUN;
    const { cleanUpJob } = await import('../pipeline/epilogue.js');
    return await cleanUpJob({ args, env, config, io });
  } catch (e) {
    const { handleFailure } = await import('../pipeline/failure.js');
    return handleFailure(e, { kind, args, env, config, io });
  }
}
