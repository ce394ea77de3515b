// `check --job SCRIPT`: what the prologue would make of a job script's #VM
// lines, without touching the node. Users run it before qsub.
import { realpathSync } from 'node:fs';
import { loadConfig, parseConfig, DEFAULT_CONFIG_FILE } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import { readScriptHeader, scanDirectives } from '../torque/directives.js';
import { EXIT_JOB_FAULT, EXIT_RUN, JobFault, isJobFault, type ExitCode, type Problem } from '../torque/exit.js';
import { resolveScanned, type VmRequest } from '../request/resolve.js';
import { VM_KEY_NAMES } from '../request/keys.js';
import { line, problemLine } from '../report/user.js';
import type { HookIO } from '../torque/hook.js';

export interface CheckJobOptions {
  script: string;
  configFile: string;
  configExplicit: boolean;
  queue?: string;
  json: boolean;
  io: HookIO;
}

/** Users may run check where the admin's ini is not readable: then the built-in defaults, said out loud. */
export function configForCheck(configFile: string, explicit: boolean, notes: string[]): Config {
  try {
    return loadConfig(configFile).config;
  } catch (e) {
    if (explicit || configFile !== DEFAULT_CONFIG_FILE) throw e;
    notes.push(`${DEFAULT_CONFIG_FILE} is not readable here; using the built-in defaults, which may differ from the cluster's`);
    return parseConfig('', '(built-in defaults)').config;
  }
}

export function checkJob(o: CheckJobOptions): ExitCode {
  const notes: string[] = [];
  const config = configForCheck(o.configFile, o.configExplicit, notes);
  let real: string;
  try {
    real = realpathSync(o.script);
  } catch (e) {
    throw new JobFault(`cannot read ${o.script}`, [{ id: 'script', where: o.script, message: `cannot be read (${(e as NodeJS.ErrnoException).code})`, fix: 'give the path of your job script' }]);
  }
  const header = readScriptHeader(real);
  if (!header) throw new JobFault(`cannot read ${o.script}`, [{ id: 'script', where: o.script, message: 'does not exist', fix: 'give the path of your job script' }]);
  const scan = scanDirectives(header.text, header.truncated);
  notes.push(...scan.notes);
  const forced = o.queue !== undefined && config.policy.vm_queues.includes(o.queue);
  const vmJob = scan.vmLines > 0 || forced;

  let request: VmRequest | undefined;
  let problems: readonly Problem[] = [];
  if (vmJob) {
    try {
      request = resolveScanned(scan, config, forced);
    } catch (e) {
      if (!isJobFault(e)) throw e;
      problems = e.problems;
    }
  }

  if (o.json) {
    o.io.out(JSON.stringify({ script: o.script, config: config.file, vmJob, ok: problems.length === 0, request, problems, notes }, null, 2) + '\n');
  } else {
    for (const n of notes) o.io.out(line(n) + '\n');
    if (!vmJob) o.io.out(line(`${o.script}: not a VM job (no #VM lines)`) + '\n');
    else if (problems.length > 0) {
      o.io.out(line(`${o.script}: the #VM request has ${problems.length} problem${problems.length > 1 ? 's' : ''}; the job would not start`) + '\n');
      for (const p of problems) o.io.out(problemLine(p) + '\n');
    } else if (request) {
      o.io.out(line(`${o.script}: VM job; the request resolves to (config: ${config.file})`) + '\n');
      o.io.out(table(request));
    }
  }
  return problems.length > 0 ? EXIT_JOB_FAULT : EXIT_RUN;
}

function table(r: VmRequest): string {
  const rows: string[] = [];
  for (const k of VM_KEY_NAMES) {
    const v = (r as unknown as Record<string, unknown>)[k];
    if (v === undefined) continue;
    const shown = v === null ? '(from image inspection)' : k === 'ram' || k === 'unclot_shmem' ? formatSize(v as number) : String(v);
    const src = r.sources[k] === 'job' ? '#VM' : r.sources[k] === 'default' ? '[defaults]' : 'image';
    rows.push(`  ${k.padEnd(16)} ${shown.padEnd(28)} ${src}`);
  }
  return rows.join('\n') + '\n';
}
