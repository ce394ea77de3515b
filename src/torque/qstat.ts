// The job's attributes from `qstat -f -1 JOBID`: where its output goes, how
// often it was started, and its Variable_List. Loaded only when needed.
import { runTool } from '../tools/run.js';
import type { Config } from '../config/schema.js';

export interface JobAttributes {
  raw: Record<string, string>;
  errorPath?: string;
  outputPath?: string;
  /** "oe": stderr joins stdout; "eo": stdout joins stderr; "n": separate. */
  joinPath?: string;
  startCount?: number;
  variables: Record<string, string>;
}

/** Parses `qstat -f -1` output: "    Key = value" per line, one job. */
export function parseQstat(text: string): JobAttributes {
  const raw: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s+([A-Za-z_][A-Za-z0-9_.]*)\s=\s?(.*)$/.exec(line);
    if (m) raw[m[1]!] = m[2]!;
  }
  const variables: Record<string, string> = {};
  // Variable_List is "K=V,K=V"; values may hold escaped commas ("\,").
  for (const item of (raw.Variable_List ?? '').split(/(?<!\\),/)) {
    const eq = item.indexOf('=');
    if (eq > 0) variables[item.slice(0, eq)] = item.slice(eq + 1).replace(/\\,/g, ',');
  }
  const sc = raw.start_count !== undefined && /^[0-9]+$/.test(raw.start_count) ? Number(raw.start_count) : undefined;
  return {
    raw,
    errorPath: stripHost(raw.Error_Path),
    outputPath: stripHost(raw.Output_Path),
    joinPath: raw.Join_Path,
    startCount: sc,
    variables,
  };
}

/** Torque writes paths as "host:/path". */
function stripHost(p: string | undefined): string | undefined {
  if (!p) return undefined;
  const i = p.indexOf(':/');
  return i >= 0 ? p.slice(i + 1) : p.startsWith('/') ? p : undefined;
}

export async function qstatJob(config: Config, jobId: string): Promise<JobAttributes> {
  const r = await runTool(config.tools.qstat, ['-f', '-1', jobId], {
    timeout: config.timeouts.qstat * 1000,
    toolKey: 'qstat',
    maxBuffer: 4 * 1024 * 1024,
  });
  return parseQstat(r.stdout);
}
