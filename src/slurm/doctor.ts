// What `doctor` and `doctor --clear` ask Slurm on a node with [batch] system =
// slurm: slurmctld's configuration (scontrol show config), the local slurmd's
// node name (scontrol show slurmd), this node's state and reason, and the
// resume of a node that we drained. Each call goes through runTool with
// [tools] scontrol, time-boxed, with the SLURM_CONF the admin's environment
// gives (never a guessed /etc/slurm).
import type { Config } from '../config/schema.js';
import { runTool, ToolError } from '../tools/run.js';
import { slurmNodeName, slurmTools } from './contract.js';
import { nodeReason, parseShowLine, type SlurmCall } from './scontrol.js';

/** The call doctor makes: the ini's tools, and SLURM_CONF from the environment doctor runs in, when it names a file. */
export function doctorCall(config: Config, env: NodeJS.ProcessEnv): SlurmCall {
  const conf = env.SLURM_CONF;
  return { tools: slurmTools(config), ...(conf && conf.startsWith('/') ? { slurmConf: conf } : {}) };
}

const opts = (c: SlurmCall, okExitCodes?: number[]) => ({
  timeout: c.tools.timeoutMs,
  toolKey: 'scontrol',
  env: c.slurmConf ? { SLURM_CONF: c.slurmConf } : undefined,
  maxBuffer: 4 * 1024 * 1024,
  okExitCodes,
});

/**
 * `scontrol show config` as Key -> value: "Name = value" lines, "(null)" read
 * as ''. Keys keep scontrol's spelling (Prolog, PrologFlags, SLURM_CONF).
 */
export function parseShowConfig(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_[\]]*)\s+= ?(.*)$/.exec(line);
    if (!m || m[1]! in out) continue;
    const v = m[2]!.trim();
    out[m[1]!] = v === '(null)' ? '' : v;
  }
  return out;
}

/** slurmctld's configuration; throws (a ToolError) when slurmctld does not answer. */
export async function showConfig(c: SlurmCall): Promise<Record<string, string>> {
  const r = await runTool(c.tools.scontrol, ['show', 'config'], opts(c));
  return parseShowConfig(r.stdout);
}

/** The comma-separated words of a slurm.conf list value (PrologFlags, JobSubmitPlugins), lower-cased. */
export const listWords = (v: string | undefined): string[] => (v ?? '').split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);

/** JobSubmitPlugins names lua ("lua" or "job_submit/lua"). */
export const hasLuaPlugin = (v: string | undefined): boolean => listWords(v).some((w) => w === 'lua' || w === 'job_submit/lua');

/**
 * PrologEpilogTimeout in seconds; undefined when unset. 22.05 shows an unset
 * one as 65534 (NO_VAL16): slurmd then waits for a Prolog for ever.
 */
export function prologEpilogTimeout(v: string | undefined): number | undefined {
  const m = /^([0-9]+)/.exec(v ?? '');
  if (!m) return undefined;
  const n = Number(m[1]);
  return n >= 65534 ? undefined : n;
}

/**
 * The least PrologEpilogTimeout that lets a cold preparation finish: the
 * Prolog's own deadline ([timeouts] total: caching, verifying, seeding and
 * booting a new image), plus what it does after that deadline to report the
 * failure: up to three scontrol or scancel calls (show node, update, scancel),
 * each time-boxed by [timeouts] qstat. slurmd killing the Prolog sooner would
 * cut a preparation short and drain the node as "Prolog error", with no reason
 * of ours. install.sh --slurm prints the same number.
 */
export function neededPrologEpilogTimeout(config: Config): number {
  return config.timeouts.total + 3 * config.timeouts.qstat;
}

/** The node name of the slurmd on this host (scontrol show slurmd: "Hostname = NAME", slurmd's -N name if it has one). */
export async function localSlurmdName(c: SlurmCall): Promise<string> {
  const r = await runTool(c.tools.scontrol, ['show', 'slurmd'], opts(c));
  const name = parseShowConfig(r.stdout).Hostname;
  if (!name || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(name)) throw new Error(`${c.tools.scontrol} show slurmd named no node`);
  return name;
}

/**
 * This node's Slurm name: SLURMD_NODENAME when the admin gives it, else what
 * the local slurmd says, else the host name. `from` says which, and `slurmdError`
 * why slurmd did not answer.
 */
export async function thisNode(c: SlurmCall, env: NodeJS.ProcessEnv): Promise<{ name: string; from: string; slurmdError?: string }> {
  const given = env.SLURMD_NODENAME;
  if (given && /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(given)) return { name: given, from: 'SLURMD_NODENAME' };
  try {
    return { name: await localSlurmdName(c), from: 'scontrol show slurmd' };
  } catch (e) {
    const fallback = slurmNodeName(undefined);
    return { ...fallback, slurmdError: e instanceof ToolError ? e.message : String((e as Error).message ?? e) };
  }
}

export interface NodeView {
  node: string;
  /** State= as scontrol shows it, e.g. IDLE, IDLE+DRAIN, MIXED+DRAIN, DOWN+NOT_RESPONDING. */
  state: string;
  /** Reason= without slurmctld's "[user@time]"; '' when none. */
  reason: string;
}

/** scontrol show node -o NAME; undefined when slurmctld does not know the node. */
export async function showNode(c: SlurmCall, node: string): Promise<NodeView | undefined> {
  const r = await runTool(c.tools.scontrol, ['show', 'node', '-o', node], opts(c, [1]));
  if (r.exitCode === 1) {
    if (/not found/i.test(r.stderr)) return undefined;
    throw new Error(`${c.tools.scontrol} show node ${node}: ${r.stderr.trim().split('\n')[0]?.slice(0, 200) ?? 'exit 1'}`);
  }
  const line = r.stdout.split('\n').find((l) => l.startsWith('NodeName='));
  if (!line) return undefined;
  const f = parseShowLine(line);
  return { node: f.NodeName ?? node, state: f.State ?? '', reason: nodeReason(f) };
}

/** DRAIN in any form (IDLE+DRAIN, MIXED+DRAIN, DRAINED, DRAINING): slurmctld schedules nothing new here. */
export const isDrained = (n: NodeView): boolean => /DRAIN/i.test(n.state);
/** DOWN in any form: slurmctld does not reach slurmd, or an operator set it. */
export const isDown = (n: NodeView): boolean => /^DOWN|\+DOWN/i.test(n.state);
/** Our reasons start with "vtorque:" (slurmText); anything else is an operator's. */
export const isOurReason = (reason: string): boolean => reason.startsWith('vtorque:');

export type ResumeOutcome =
  | { action: 'resumed'; node: string; reason: string }
  | { action: 'left-alone'; node: string; why: string };

/**
 * Resumes this node when, read again just now, it is drained with a reason of
 * ours; an operator's drain or down, and a node not drained, are left alone.
 */
export async function resumeOurDrain(c: SlurmCall, node: string): Promise<ResumeOutcome> {
  const n = await showNode(c, node);
  if (!n) throw new Error(`slurmctld does not know node ${node}`);
  if (!isDrained(n) && !isDown(n)) return { action: 'left-alone', node: n.node, why: `it is ${n.state}, not drained` };
  if (!isOurReason(n.reason)) {
    return { action: 'left-alone', node: n.node, why: n.reason ? `its reason is not ours: "${n.reason}"` : `it is ${n.state} without a reason: an operator took it out` };
  }
  await runTool(c.tools.scontrol, ['update', `nodename=${n.node}`, 'state=resume'], opts(c));
  return { action: 'resumed', node: n.node, reason: n.reason };
}
