// Torque does not deliver the .o/.e files of a job whose prologue exits 1, so
// we put the report where the user looks for the job's errors ourselves: the
// job's error path, written by a child process that runs as the job's owner.
import type { Config } from '../config/schema.js';
import type { JobArgs, JobEnv } from '../torque/contract.js';
import { jobSequence } from '../torque/contract.js';
import type { JobAttributes } from '../torque/qstat.js';
import { runTool } from '../tools/run.js';
import { isFileName } from './append-as-owner.js';

export interface Owner {
  uid: number;
  gid: number;
}

/** Looks the user up through NSS (getent), because site users live in LDAP/SSSD. */
export async function lookupOwner(config: Config, user: string, group: string): Promise<Owner> {
  const pw = await runTool(config.tools.getent, ['passwd', '--', user], { timeout: 10_000, toolKey: 'getent', okExitCodes: [2] });
  const f = pw.stdout.trim().split('\n')[0]?.split(':') ?? [];
  if (pw.exitCode !== 0 || f.length < 7) throw new Error(`user ${user} is not known to getent passwd`);
  let gid = Number(f[3]);
  const gr = await runTool(config.tools.getent, ['group', '--', group], { timeout: 10_000, toolKey: 'getent', okExitCodes: [2] });
  const g = gr.stdout.trim().split(':');
  if (gr.exitCode === 0 && g.length >= 3 && /^[0-9]+$/.test(g[2]!)) gid = Number(g[2]);
  return { uid: Number(f[2]), gid };
}

/**
 * Where Torque would have put the job's stderr: a path, and the file name to
 * use inside it if it is a directory. Decided without touching the path: the
 * user owns it, so only the as-owner child looks at it.
 */
export function errorPathFor(args: JobArgs, env: JobEnv, attrs?: JobAttributes): { path: string; nameInDir?: string } | undefined {
  const name = `${args.jobName}.e${jobSequence(args.jobId)}`;
  const p = attrs ? (attrs.joinPath === 'oe' ? attrs.outputPath : attrs.errorPath) : undefined;
  if (p) return { path: p, nameInDir: isFileName(name) ? name : undefined };
  return env.workdir ? { path: `${env.workdir}/${name}` } : undefined;
}

export interface DeliverInput {
  config: Config;
  args: JobArgs;
  env: JobEnv;
  attrs?: JobAttributes;
  text: string;
}

/** Returns the path written, or throws with the reason (the caller logs it). */
export async function deliverReport(input: DeliverInput): Promise<string> {
  const target = errorPathFor(input.args, input.env, input.attrs);
  if (!target || !target.path.startsWith('/')) throw new Error('no error path: qstat gave none and PBS_O_WORKDIR is unset');
  const owner = await lookupOwner(input.config, input.args.user, input.args.group);
  // Our own executable in a child that runs as the owner: the kernel then
  // enforces exactly the user's rights on the path. It prints the file it wrote.
  const r = await runTool(process.execPath, [...process.execArgv, process.argv[1]!, '__append-as-owner', target.path, ...(target.nameInDir ? [target.nameInDir] : [])], {
    timeout: 15_000,
    input: input.text,
    uid: owner.uid,
    gid: owner.gid,
    env: owner.uid === 0 ? { VTORQUE_ALLOW_ROOT: '1' } : {},
  });
  return r.stdout.trim() || target.path;
}
