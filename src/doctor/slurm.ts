// doctor's `slurm` check, for [batch] system = slurm: slurmctld answers, and
// slurm.conf wires us in as install.sh --slurm prints it (Prolog, Epilog,
// TaskProlog, PrologFlags=Alloc, JobSubmitPlugins=lua with our
// job_submit.lua, PrologEpilogTimeout), and this node is not drained by us.
// One line each, with a fix. The comment above each function says what fails.
import { lstatSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { ToolError } from '../tools/run.js';
import {
  doctorCall, hasLuaPlugin, isDown, isDrained, isOurReason, listWords, neededPrologEpilogTimeout, prologEpilogTimeout, resumeOurDrain, showConfig, showNode, thisNode,
} from '../slurm/doctor.js';
import type { SlurmCall } from '../slurm/scontrol.js';
import { checkWhatHooksRun, mode, parseWrapper, untrustedFile, type CheckResult, type DoctorContext, type WrapperLine } from './checks.js';

const CHECK = 'slurm';
const r = (status: CheckResult['status'], message: string, fix?: string, extra: Partial<CheckResult> = {}): CheckResult => ({ check: CHECK, status, message, ...(fix ? { fix } : {}), ...extra });

// The only variables a Slurm hook needs: slurmd's SLURM_* and SLURMD_* ones the program reads (src/slurm/contract.ts), and a fixed LANG and PATH.
const PASSED = /^(?:LANG=[A-Za-z0-9_.@-]+|PATH=\/bin:\/usr\/bin|\$\{(SLURMD?_[A-Z_]+)\+"\1=\$\1"\})$/;

/** The first line of our job_submit.lua: how doctor and install.sh know it from a site's. */
export const LUA_MARK = "vtorque-prologue's job_submit.lua";

const errText = (e: unknown): string => (e instanceof ToolError ? e.message : String((e as Error)?.message ?? e)).split('\n')[0]!.slice(0, 300);

const GLOB = /[*?[]/;

/**
 * The programs a Prolog= or Epilog= value names: the path, or what its glob
 * matches (slurm.conf(5): "/etc/slurm/prolog.d/*" runs every match; the
 * pattern is in the last component, as sites write it), sorted.
 */
export function namedPrograms(value: string): string[] {
  if (!GLOB.test(value)) return [value];
  const dir = dirname(value);
  if (GLOB.test(dir)) return [];
  const re = new RegExp(`^${basename(value).replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  try {
    return readdirSync(dir).filter((n) => !n.startsWith('.') && re.test(n)).sort().map((n) => join(dir, n));
  } catch {
    return [];
  }
}

/** Whether path is an exec wrapper of ours for sub (read through a symlink, as slurmd runs it). */
function runsOurs(path: string, sub: string): boolean {
  try {
    const w = parseWrapper(readFileSync(path, 'utf8'));
    return w !== undefined && w.sub === sub && w.program.endsWith('/vtorque-prologue');
  } catch {
    return false;
  }
}

/** What the Prolog or Epilog line names, judged as mom_priv's wrappers are: root's, ours, a clean environment, this ini. */
function checkHookWrapper(ctx: DoctorContext, key: 'Prolog' | 'Epilog', value: string, wrappers: WrapperLine[]): CheckResult {
  const sub = key === 'Prolog' ? 'slurm-prolog' : 'slurm-epilog';
  const fix = 'run install.sh --slurm, and set in slurm.conf the line it prints';
  if (!value) return r('FAIL', `slurm.conf has no ${key}=: slurmd will not run vtorque-prologue ${sub}, and VM jobs would run without their VMs`, fix);
  let path = value;
  let among = '';
  if (GLOB.test(value)) {
    const all = namedPrograms(value);
    const ours = all.filter((p) => runsOurs(p, sub));
    if (ours.length !== 1) {
      return r('FAIL', `${key}=${value} matches ${all.length} program${all.length === 1 ? '' : 's'}, ${ours.length === 0 ? 'none of which runs' : `${ours.length} of which run`} vtorque-prologue ${sub}`,
        `link ${key === 'Prolog' ? 'vtorque-slurm-prolog' : 'vtorque-slurm-epilog'} (install.sh --slurm puts it in <prefix>/bin) into ${dirname(value)} once`);
    }
    path = ours[0]!;
    among = `, one of ${all.length} programs ${key}=${value} runs`;
  }
  let st;
  try {
    st = statSync(path);
  } catch {
    return r('FAIL', `${key}=${path} does not exist on this node; slurmd would drain it at the first job ("Prolog error")`, fix);
  }
  if (!st.isFile()) return r('FAIL', `${key}=${path} is not a regular file`, fix);
  const why = untrustedFile(path);
  if (why) return r('FAIL', `${key}=${path}, which slurmd runs as root before every job: ${why}`, `chown root:root ${path} && chmod 0755 ${path}, and make every directory above it root's and not writable by group or others`);
  const w = parseWrapper(readFileSync(path, 'utf8'));
  if (!w || w.sub !== sub || !w.program.endsWith('/vtorque-prologue')) return r('FAIL', `${key}=${path} does not run vtorque-prologue ${sub}`, fix);
  const missing = [w.env, w.node, w.program].find((f) => f !== undefined && !existsQuiet(f));
  if (missing) return r('FAIL', `${key}=${path} runs ${missing}, which does not exist`, 'run install.sh --slurm again, e.g. after moving Node.js or the program');
  wrappers.push(w);
  const extra = w.passes.filter((p) => !PASSED.test(p));
  if (!w.env || extra.length > 0) {
    return r('warn', `${key}=${path} hands node ${w.env ? `more than LANG, PATH and SLURM_*: ${extra.join(' ')}` : "slurmd's whole environment"}; a NODE_OPTIONS there would load code into the Prolog as root`,
      'run install.sh --slurm again: its wrappers start node through env -i with only what the program reads');
  }
  if (resolve(w.config) !== resolve(ctx.configFile)) return r('warn', `${key}=${path} uses --config ${w.config}, not ${ctx.configFile} that doctor checked`, `run: vtorque-prologue --config ${w.config} doctor`);
  return r('ok', `${key}=${path} runs vtorque-prologue ${sub} (root's, clean environment, mode ${mode(st.mode)}${among})`);
}

const existsQuiet = (p: string): boolean => {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
};

/** The KEY=value line install.sh fills in (JOB_DIR= in the TaskProlog), or `local KEY = "value"` in job_submit.lua. */
const shellSetting = (text: string, key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1];
const luaSetting = (text: string, key: string) => new RegExp(`^local ${key} = "(.*)"\\s*$`, 'm').exec(text)?.[1];

// Fails when TaskProlog= is not our vtorque-task-prolog, is not root's alone
// (it runs as every job's owner), cannot be run by them, or looks for the
// job's vtorque: lines in another directory than [paths] job_dir.
function checkTaskProlog(c: Config, path: string): CheckResult {
  const fix = 'run install.sh --slurm, and set in slurm.conf the TaskProlog= line it prints';
  if (!path) return r('FAIL', "slurm.conf has no TaskProlog=: a VM job's summary and notes never reach its output", fix);
  if (basename(path) !== 'vtorque-task-prolog') return r('FAIL', `TaskProlog=${path} is not vtorque-task-prolog: a VM job's summary and notes never reach its output`, `${fix}; a site's own TaskProlog can run ours and print what it prints`);
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return r('FAIL', `TaskProlog=${path} does not exist on this node`, fix);
  }
  const why = untrustedFile(path);
  if (why) return r('FAIL', `TaskProlog=${path}, which slurmd runs as every job's owner: ${why}`, `chown root:root ${path} && chmod 0755 ${path}`);
  if (!st.isFile() || (st.mode & 0o005) !== 0o005) return r('FAIL', `TaskProlog=${path} has mode ${mode(st.mode)}; job owners must be able to read and run it`, `chmod 0755 ${path}`);
  const jobDir = shellSetting(readFileSync(path, 'utf8'), 'JOB_DIR');
  if (!jobDir || resolve(jobDir) !== resolve(c.paths.job_dir)) {
    return r('FAIL', `TaskProlog=${path} looks under ${jobDir ?? '(nothing)'}, not [paths] job_dir ${c.paths.job_dir}: VM jobs' summaries would not be printed`, 'run install.sh --slurm again after changing [paths] job_dir');
  }
  return r('ok', `TaskProlog=${path} prints each VM job's vtorque: lines from ${c.paths.job_dir}`);
}

// Fails when JobSubmitPlugins has no lua (bad #VM requests would reach the
// Prolog, which can only cancel them), or the job_submit.lua beside slurm.conf
// is not ours, names another ini, or could be changed by others (slurmctld
// runs it). Warns when it is not on this node: slurmctld loads it from its own
// host's slurm.conf directory, which doctor can only check there.
function checkJobSubmit(ctx: DoctorContext, plugins: string, slurmConf: string): CheckResult {
  const fix = 'run install.sh --slurm on the slurmctld host, and set JobSubmitPlugins=lua in slurm.conf';
  if (!hasLuaPlugin(plugins)) return r('FAIL', `JobSubmitPlugins is ${plugins || 'unset'}, without lua: bad #VM requests are not refused at sbatch, and a VM job's script is not wrapped to run in its VM`, fix);
  if (!slurmConf.startsWith('/')) return r('warn', 'scontrol show config names no SLURM_CONF: cannot tell where job_submit.lua is', 'run doctor with SLURM_CONF set to slurm.conf');
  const lua = join(dirname(slurmConf), 'job_submit.lua');
  let text: string;
  try {
    text = readFileSync(lua, 'utf8');
  } catch {
    return r('warn', `${lua} is not on this node; slurmctld loads job_submit.lua beside its own slurm.conf`, 'run doctor on the slurmctld host to check it there (install.sh --slurm installs it)');
  }
  const first = text.split('\n')[0] ?? '';
  if (!first.includes(LUA_MARK)) return r('FAIL', `${lua} is not vtorque-prologue's (its first line: ${JSON.stringify(first.slice(0, 80))}): #VM requests are not checked at sbatch`, "merge ours (conf/slurm/job_submit.lua) into the site's: call its slurm_job_submit from yours");
  const why = untrustedFile(lua);
  if (why) return r('FAIL', `${lua}, which slurmctld runs: ${why}`, `chown root:root ${lua} && chmod 0644 ${lua}`);
  const config = luaSetting(text, 'CONFIG');
  if (!config || resolve(config) !== resolve(ctx.configFile)) return r('warn', `${lua} checks requests with ${config ?? '(no CONFIG)'}, not ${ctx.configFile} that doctor checked`, `run: vtorque-prologue --config ${config ?? 'FILE'} doctor, or install.sh --slurm --config DIR`);
  const runner = luaSetting(text, 'RUNNER');
  if (runner) ctx.slurmRunner = runner;
  return r('ok', `JobSubmitPlugins=${plugins}; ${lua} is ours and checks #VM requests with ${config}`);
}

// Fails when PrologEpilogTimeout is below what a cold image preparation may
// take: [timeouts] total plus three scontrol/scancel calls of [timeouts] qstat
// to report a failure (neededPrologEpilogTimeout). Warns when it is unset:
// slurmd then waits for a Prolog for ever, and only our own deadline ends one.
function checkTimeout(c: Config, value: string): CheckResult {
  const need = neededPrologEpilogTimeout(c);
  const have = prologEpilogTimeout(value);
  const why = `[timeouts] total ${c.timeouts.total} s for a cold image preparation, plus 3 x [timeouts] qstat ${c.timeouts.qstat} s to report a failure`;
  if (have === undefined) return r('warn', `PrologEpilogTimeout is unset: slurmd waits for a hung Prolog for ever; ${need} s is what a cold preparation may take (${why})`, `set PrologEpilogTimeout=${need} in slurm.conf`);
  if (have < need) return r('FAIL', `PrologEpilogTimeout=${have} s is below ${need} s (${why}): slurmd would kill a cold preparation and drain the node as "Prolog error"`, `set PrologEpilogTimeout=${need} in slurm.conf, or lower [timeouts] total`);
  return r('ok', `PrologEpilogTimeout=${have} s covers a cold preparation (${need} s: ${why})`);
}

// Fails when slurmctld does not answer scontrol show config; when Prolog= or
// Epilog= do not run our wrappers, root's alone, with a clean environment
// (see checkHookWrapper), TaskProlog= and job_submit.lua are not ours
// (checkTaskProlog, checkJobSubmit), PrologFlags lacks Alloc (a multi-node VM
// job needs its Prolog on every node at allocation, not at its first step:
// the batch step's node must not start before the other nodes' VMs), and
// PrologEpilogTimeout is too short (checkTimeout). Then this node (checkNode).
export async function checkSlurm(ctx: DoctorContext): Promise<CheckResult[]> {
  const c = ctx.config!;
  const call = doctorCall(c, ctx.env ?? process.env);
  const t0 = performance.now();
  let conf: Record<string, string>;
  try {
    conf = await showConfig(call);
  } catch (e) {
    return [r('FAIL', `${c.tools.scontrol} show config fails: ${errText(e)}`, `check [tools] scontrol, that slurmctld runs and this host reaches it (SLURM_CONF ${call.slurmConf ?? "is not set: scontrol's default"}), and munged`)];
  }
  const out = [r('ok', `${c.tools.scontrol} show config reaches slurmctld (${Math.round(performance.now() - t0)} ms; SLURM_CONF ${conf.SLURM_CONF || '?'}, Slurm ${conf.SLURM_VERSION || '?'})`, undefined, { data: { slurmConf: conf.SLURM_CONF, version: conf.SLURM_VERSION } })];
  const wrappers: WrapperLine[] = [];
  out.push(checkHookWrapper(ctx, 'Prolog', conf.Prolog ?? '', wrappers));
  out.push(checkHookWrapper(ctx, 'Epilog', conf.Epilog ?? '', wrappers));
  out.push(...checkWhatHooksRun(ctx, wrappers, CHECK));
  out.push(checkTaskProlog(c, conf.TaskProlog ?? ''));
  const flags = listWords(conf.PrologFlags);
  out.push(flags.includes('alloc')
    ? r('ok', `PrologFlags=${conf.PrologFlags}: the Prolog runs on every node at allocation`)
    : r('FAIL', `PrologFlags=${conf.PrologFlags || '(unset)'} lacks Alloc: a multi-node VM job's Prolog would run on its other nodes only at their first step, after the job has started`, `add Alloc to PrologFlags in slurm.conf (keep its other flags), then scontrol reconfigure`));
  out.push(checkJobSubmit(ctx, conf.JobSubmitPlugins ?? '', conf.SLURM_CONF ?? ''));
  // Without our lua, the runner is the one installed beside the Prolog's program.
  if (!ctx.slurmRunner && wrappers[0]) ctx.slurmRunner = join(dirname(wrappers[0].program), 'vtorque-slurm-run');
  out.push(checkTimeout(c, conf.PrologEpilogTimeout ?? ''));
  out.push(...(await checkNode(ctx, call)));
  return out;
}

/** The drained-by-us FAIL: --clear resumes the node, so it does not stop --clear as other problems do. */
export const DRAINED_BY_US = 'slurm-drained-by-vtorque';

// Fails when the local slurmd does not answer, slurmctld does not know this
// node, or the node is down, or drained with a reason of ours (fixed by
// doctor --clear once the cause is). Warns when an operator drained it: theirs
// to end.
async function checkNode(ctx: DoctorContext, call: SlurmCall): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const id = await thisNode(call, ctx.env ?? process.env);
  if (id.slurmdError) out.push(r('FAIL', `the slurmd on this node does not answer (${id.slurmdError}); taking ${id.name} (${id.from}) as its name`, 'start slurmd, or set SLURMD_NODENAME to its NodeName when running doctor'));
  let n;
  try {
    n = await showNode(call, id.name);
  } catch (e) {
    return [...out, r('FAIL', `${call.tools.scontrol} show node ${id.name} fails: ${errText(e)}`, 'check [tools] scontrol and that slurmctld runs')];
  }
  if (!n) return [...out, r('FAIL', `slurmctld knows no node ${id.name} (${id.from})`, 'name it in slurm.conf (NodeName=), or run doctor with SLURMD_NODENAME set to its NodeName')];
  const data = { node: n.node, state: n.state, reason: n.reason, from: id.from };
  if (isDrained(n) && isOurReason(n.reason)) {
    out.push(r('FAIL', `node ${n.node} is ${n.state}, drained by vtorque: ${n.reason}`, 'fix the cause, then run: vtorque-prologue doctor --clear', { data: { ...data, [DRAINED_BY_US]: true } }));
  } else if (isDrained(n)) {
    out.push(r('warn', `node ${n.node} is ${n.state}${n.reason ? `, with an operator's reason: ${n.reason}` : ' without a reason'}`, `an operator's drain is theirs to end (scontrol update nodename=${n.node} state=resume); doctor --clear leaves it alone`, { data }));
  } else if (isDown(n)) {
    out.push(r('FAIL', `node ${n.node} is ${n.state}${n.reason ? ` (${n.reason})` : ''}`, 'start slurmd here and check that slurmctld reaches it (SlurmdPort, munged)', { data }));
  } else out.push(r('ok', `node ${n.node} is ${n.state} (${id.from})`, undefined, { data }));
  return out;
}

export interface SlurmClear {
  status: 'onlined' | 'left-alone' | 'failed';
  message: string;
}

/** doctor --clear on a Slurm node: resumes it only when it is drained with a reason of ours, read again just before. */
export async function clearSlurmNode(ctx: DoctorContext): Promise<SlurmClear> {
  const call = doctorCall(ctx.config!, ctx.env ?? process.env);
  try {
    const { name } = await thisNode(call, ctx.env ?? process.env);
    const o = await resumeOurDrain(call, name);
    return o.action === 'resumed'
      ? { status: 'onlined', message: `node ${o.node} is resumed; our reason "${o.reason}" is cleared` }
      : { status: 'left-alone', message: `node ${o.node} left as it is: ${o.why}` };
  } catch (e) {
    return { status: 'failed', message: `node could not be resumed: ${errText(e)}` };
  }
}
