// The Slurm client calls the engine makes, each through runTool: absolute
// path, argv (no shell), a time box, SLURM_CONF passed on so the tools reach
// the cluster slurmd was started for. Light enough for the non-VM path
// (tools/run.ts only): the Prolog reads the job script through here.
import { runTool } from '../tools/run.js';
import { slurmText, type SlurmTools } from './contract.js';

export interface SlurmCall {
  tools: SlurmTools;
  slurmConf?: string;
  signal?: AbortSignal;
}

const opts = (c: SlurmCall, key: 'scontrol' | 'scancel', extra: { maxBuffer?: number; okExitCodes?: number[] } = {}) => ({
  timeout: c.tools.timeoutMs,
  toolKey: key,
  env: c.slurmConf ? { SLURM_CONF: c.slurmConf } : undefined,
  signal: c.signal,
  maxBuffer: extra.maxBuffer ?? 1024 * 1024,
  okExitCodes: extra.okExitCodes,
});

/** The job script as slurmctld holds it (root only; ~17 ms). undefined: the job has none (salloc, srun without sbatch). */
export async function batchScript(c: SlurmCall, jobId: string, maxBytes: number): Promise<string | undefined> {
  const r = await runTool(c.tools.scontrol, ['write', 'batch_script', jobId, '-'], opts(c, 'scontrol', { maxBuffer: maxBytes + 64 * 1024, okExitCodes: [1] }));
  // 22.05 exits 0 even when it fails ("job script retrieval failed: Invalid job id specified"): its stderr decides.
  if (r.exitCode === 1 || /retrieval failed/i.test(r.stderr)) {
    // An allocation without a script (salloc) has nothing to read.
    if (/not a batch job|No job script/i.test(r.stderr)) return undefined;
    throw new Error(`${c.tools.scontrol} write batch_script ${jobId} -: ${r.stderr.trim().split('\n')[0]?.slice(0, 200) ?? 'exit 1'}`);
  }
  return r.stdout;
}

/** Where parseShowLine names the keys that appeared more than once. */
export const FORGED = Symbol('forged');
export const isForged = (fields: { [FORGED]?: Set<string> }, key: string): boolean => fields[FORGED]?.has(key) ?? false;

/**
 * `scontrol show -o` output as key=value pairs. Values may hold blanks
 * (Reason=, Comment=, paths), so a key starts where a blank is followed by a
 * word of letters, digits, ':' or '/' then '='. A job's own words (its name,
 * comment, paths) can hold such text too: a key seen twice is in `forged`,
 * and its value is not to be trusted.
 */
export function parseShowLine(line: string): Record<string, string> & { [FORGED]?: Set<string> } {
  const out: Record<string, string> & { [FORGED]?: Set<string> } = {};
  const forged = new Set<string>();
  out[FORGED] = forged;
  const re = /(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=/g;
  const marks: { key: string; at: number; valueAt: number }[] = [];
  for (let m = re.exec(line); m; m = re.exec(line)) marks.push({ key: m[1]!, at: m.index, valueAt: m.index + m[0].length });
  marks.forEach((k, i) => {
    const end = i + 1 < marks.length ? marks[i + 1]!.at : line.length;
    if (k.key in out) forged.add(k.key);
    else out[k.key] = line.slice(k.valueAt, end).trim();
  });
  return out;
}


/** scontrol show job -o: the job's fields; undefined when slurmctld no longer knows the job. */
export async function showJob(c: SlurmCall, jobId: string): Promise<ReturnType<typeof parseShowLine> | undefined> {
  const r = await runTool(c.tools.scontrol, ['show', 'job', '-o', jobId], opts(c, 'scontrol', { okExitCodes: [1] }));
  if (r.exitCode === 1) {
    if (/Invalid job id/i.test(r.stderr)) return undefined;
    throw new Error(`${c.tools.scontrol} show job ${jobId}: ${r.stderr.trim().split('\n')[0]?.slice(0, 200) ?? 'exit 1'}`);
  }
  const first = r.stdout.split('\n').find((l) => l.startsWith('JobId='));
  if (!first) throw new Error(`${c.tools.scontrol} show job ${jobId} printed no job`);
  return parseShowLine(first);
}

/** scontrol show hostnames: a compressed host list ("n[01-03]") one name a line. */
export async function expandHosts(c: SlurmCall, list: string): Promise<string> {
  const r = await runTool(c.tools.scontrol, ['show', 'hostnames', list], opts(c, 'scontrol'));
  return r.stdout;
}

/** Puts our reason where the user sees it (scontrol show job, squeue %k, sacct), then cancels the job. */
export async function cancelWithReason(c: SlurmCall, jobId: string, reason: string): Promise<string> {
  const comment = slurmText(reason);
  await runTool(c.tools.scontrol, ['update', `jobid=${jobId}`, `comment=${comment}`], opts(c, 'scontrol'));
  await runTool(c.tools.scancel, [jobId], opts(c, 'scancel'));
  return comment;
}

/**
 * Puts our reason in the job's comment, then puts the job back in the queue
 * (scontrol requeue: slurmctld ends it on its nodes and it waits to be
 * scheduled again, Restarts counting up). Fails for a job that may not be
 * requeued (sbatch --no-requeue, JobRequeue=0).
 */
export async function requeueWithReason(c: SlurmCall, jobId: string, reason: string): Promise<string> {
  const comment = slurmText(reason);
  await runTool(c.tools.scontrol, ['update', `jobid=${jobId}`, `comment=${comment}`], opts(c, 'scontrol'));
  await runTool(c.tools.scontrol, ['requeue', jobId], opts(c, 'scontrol'));
  return comment;
}

export type DrainOutcome =
  | { action: 'drained'; node: string; reason: string }
  | { action: 'drained-kept-reason'; node: string; reason: string };

/** The node's reason without the "[user@time]" slurmctld appends; '' when none. */
export function nodeReason(fields: Record<string, string>): string {
  const r = (fields.Reason ?? '').replace(/\s*\[[^\]]*@[^\]]*\]\s*$/, '').trim();
  return r === '(null)' || r === 'none' ? '' : r;
}

/**
 * Drains the node with our reason. An operator's own reason stays: the node
 * is still drained (the job must not come back to it), with their words given
 * back to scontrol, which wants a reason with every drain.
 */
export async function drainNode(c: SlurmCall, node: string, reason: string): Promise<DrainOutcome> {
  const r = await runTool(c.tools.scontrol, ['show', 'node', '-o', node], opts(c, 'scontrol'));
  const current = nodeReason(parseShowLine(r.stdout.split('\n')[0] ?? ''));
  const operator = current !== '' && !current.startsWith('vtorque:');
  const text = operator ? current : slurmText(reason);
  await runTool(c.tools.scontrol, ['update', `nodename=${node}`, 'state=drain', `reason=${text}`], opts(c, 'scontrol'));
  return operator ? { action: 'drained-kept-reason', node, reason: current } : { action: 'drained', node, reason: text };
}
