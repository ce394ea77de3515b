// The batch system does not deliver the output files of a job it refused
// (Torque: a prologue exit 1), so we put the report where the user looks for
// the job's errors ourselves: the target the engine names (the job's error
// path), written by a child process that runs as the job's owner.
import type { Config } from '../config/schema.js';
import type { BatchSystem, JobArgs, JobEnv, JobRecord, ReportTarget } from '../core/engine.js';
import { groupOf, passwdOf } from '../tools/nss.js';
import { runTool } from '../tools/run.js';

export interface Owner {
  uid: number;
  gid: number;
}

/** The job owner's ids from NSS; their group's gid when NSS knows the group, else their passwd gid. */
export async function lookupOwner(config: Config, user: string, group: string): Promise<Owner> {
  const [pw, gr] = await Promise.all([passwdOf(config, user), groupOf(config, group)]);
  if (!pw) throw new Error(`user ${user} is not known to getent passwd`);
  return { uid: pw.uid, gid: gr?.gid ?? pw.gid };
}

/**
 * Where the batch system would have put the job's stderr: a path, and the
 * file name to use inside it if it is a directory. Decided without touching
 * the path: the user owns it, so only the as-owner child looks at it.
 */
export function errorPathFor(engine: BatchSystem, args: JobArgs, env: JobEnv, attrs?: JobRecord): ReportTarget | undefined {
  return engine.reportTarget(args, env, attrs);
}

export interface DeliverInput {
  config: Config;
  engine: BatchSystem;
  args: JobArgs;
  env: JobEnv;
  attrs?: JobRecord;
  text: string;
}

/** Returns the path written, or throws with the reason (the caller logs it). */
export async function deliverReport(input: DeliverInput): Promise<string> {
  const target = errorPathFor(input.engine, input.args, input.env, input.attrs);
  if (!target || !target.path.startsWith('/')) throw new Error(input.engine.noReportTarget);
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
