// The job's attributes from `qstat -f -1 JOBID`: where its output goes, how
// often it was started, and its Variable_List. Loaded only when needed.
//
// The user writes much of that output: every variable of `qsub -v` and, with
// `qsub -V`, their whole environment, so Variable_List can be megabytes long
// and its values can hold line breaks. What this relies on, from Torque's
// src/cmds/qstat.c (display_full_job, prt_attr): one "    Name = value" line
// per attribute, each attribute once, values printed raw; with -1 a line that
// would pass 65536 characters goes on after "\n\t". So the output is read as a
// stream and only what we use is kept, each piece under a cap of its own; and
// since a line break in a value can print a line of attribute shape, a second
// copy of an attribute we act on means the record was forged by the job.
import { StringDecoder } from 'node:string_decoder';
import { runTool } from '../tools/run.js';
import { JobFault } from '../core/errors.js';
import type { Config } from '../config/schema.js';
import { VARIABLE_CAP } from '../core/engine.js';

export interface JobAttributes {
  /** The attributes we use other than Variable_List, as printed (exec_host and job_radix for placement). */
  raw: Record<string, string>;
  errorPath?: string;
  outputPath?: string;
  /** "oe": stderr joins stdout; "eo": stdout joins stderr; "n": separate. */
  joinPath?: string;
  startCount?: number;
  /** job_state as printed: Q, R, E, C (completed, kept for keep_completed), ... */
  jobState?: string;
  /** The job variables we use (VTORQUE_*, VM_*, PBS_O_*); the others are never kept. */
  variables: Record<string, string>;
  /** Attributes longer than their cap: left out, as if Torque had not printed them. */
  oversized: string[];
  /** Variables of ours longer than VARIABLE_CAP: left out of `variables`, named here so a request is never silently lost. */
  oversizedVariables: string[];
}

/** The attributes we act on. Torque prints each once for a started job. */
const USED = ['Error_Path', 'Output_Path', 'Join_Path', 'exec_host', 'start_count', 'job_radix', 'job_state', 'Variable_List'] as const;
type Used = (typeof USED)[number];
const isUsed = (k: string): k is Used => (USED as readonly string[]).includes(k);

/** Paths: PATH_MAX plus a host name. exec_host: a host and core list for a few thousand nodes. */
const CAP: Record<Exclude<Used, 'Variable_List'>, number> = {
  Error_Path: 8192, Output_Path: 8192, Join_Path: 16, start_count: 32, job_radix: 32, job_state: 16, exec_host: 1024 * 1024,
};
// The cap is the engine-neutral one: request/sister.ts names it in its refusal.
export { VARIABLE_CAP };
const NAME_CAP = 256;
const keepVariable = (name: string) => name.startsWith('VTORQUE_') || name.startsWith('VM_') || name.startsWith('PBS_O_');

interface Sink {
  write(s: string): void;
}

class ValueSink implements Sink {
  value = '';
  oversized = false;
  constructor(private readonly cap: number) {}
  write(s: string): void {
    if (this.oversized) return;
    if (this.value.length + s.length > this.cap) {
      this.oversized = true;
      this.value = '';
    } else this.value += s;
  }
}

/** Variable_List item by item ("K=V,K=V", "\," inside values), keeping only our names. */
class VariableListSink implements Sink {
  readonly variables: Record<string, string> = {};
  readonly oversized = new Set<string>();
  private mode: 'name' | 'keep' | 'skip' = 'name';
  private buf = '';
  private name = '';
  private lastChar = '';

  write(s: string): void {
    let i = 0;
    for (;;) {
      let j = s.indexOf(',', i);
      while (j >= 0 && (j > 0 ? s[j - 1] : this.lastChar) === '\\') j = s.indexOf(',', j + 1);
      this.add(j < 0 ? s.slice(i) : s.slice(i, j));
      if (j < 0) break;
      this.endItem();
      i = j + 1;
    }
    if (s.length > 0) this.lastChar = s[s.length - 1]!;
  }

  private add(piece: string): void {
    if (this.mode === 'skip' || piece === '') return;
    this.buf += piece;
    if (this.mode === 'name') {
      const eq = this.buf.indexOf('=');
      if (eq < 0) {
        if (this.buf.length > NAME_CAP) this.skip();
        return;
      }
      this.name = this.buf.slice(0, eq);
      if (eq === 0 || !keepVariable(this.name)) return this.skip();
      this.buf = this.buf.slice(eq + 1);
      this.mode = 'keep';
    }
    if (this.buf.length > VARIABLE_CAP) {
      this.oversized.add(this.name);
      delete this.variables[this.name];
      this.skip();
    }
  }

  private skip(): void {
    this.mode = 'skip';
    this.buf = '';
  }

  endItem(): void {
    if (this.mode === 'keep') {
      this.variables[this.name] = this.buf.replace(/\\,/g, ',');
      this.oversized.delete(this.name);
    }
    this.mode = 'name';
    this.buf = '';
  }
}

const ATTRIBUTE = /^ {4}([A-Za-z_][A-Za-z0-9_.]*) = /;
/** A line start that may still become "    Name = ". */
const MAYBE_ATTRIBUTE = /^(?: {0,4}| {4}[A-Za-z_][A-Za-z0-9_.]*(?: =?)?)$/;

/**
 * Fed qstat's output in chunks of any size; holds at most the caps above.
 * push() never throws (it runs inside a stream handler); end() throws a
 * JobFault for a forged record.
 */
export class QstatParser {
  private readonly decoder = new StringDecoder('utf8');
  private readonly seen = new Map<string, number>();
  private readonly values = new Map<string, ValueSink>();
  private readonly list = new VariableListSink();
  /** The start of the current line, until its shape is known; null once it is. */
  private head: string | null = '';
  /** Where the rest of the current line goes, and where continuation lines go. */
  private current: Sink | undefined;
  /** Raw line breaks not yet written: trailing blank lines belong to no value. */
  private breaks = 0;

  push(chunk: Buffer | string): void {
    this.feed(typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
  }

  private feed(text: string): void {
    let i = 0;
    for (;;) {
      const nl = text.indexOf('\n', i);
      this.segment(nl < 0 ? text.slice(i) : text.slice(i, nl));
      if (nl < 0) return;
      this.endOfLine();
      i = nl + 1;
    }
  }

  private segment(s: string): void {
    if (this.head === null) {
      this.current?.write(s);
      return;
    }
    this.head += s;
    this.classify(false);
  }

  private endOfLine(): void {
    if (this.head !== null) this.classify(true);
    this.head = '';
  }

  private classify(atEnd: boolean): void {
    const head = this.head!;
    if (head.startsWith('\t')) {
      // Torque's wrap of a long value: the value goes on, no line break in it.
      this.head = null;
      this.current?.write(head.slice(1));
      return;
    }
    const m = ATTRIBUTE.exec(head);
    if (m) {
      const key = m[1]!;
      this.head = null;
      this.breaks = 0;
      this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
      this.current = this.sinkFor(key);
      this.current?.write(head.slice(m[0].length));
      return;
    }
    if (!atEnd && head.length < NAME_CAP + 7 && MAYBE_ATTRIBUTE.test(head)) return;
    // No attribute shape: a line break inside the value being printed.
    this.head = null;
    this.breaks++;
    if (head !== '') {
      this.current?.write('\n'.repeat(this.breaks) + head);
      this.breaks = 0;
    }
  }

  private sinkFor(key: string): Sink | undefined {
    if (!isUsed(key)) return undefined;
    if (key === 'Variable_List') return this.list;
    const sink = new ValueSink(CAP[key]);
    // The first copy is Torque's; a second only matters as evidence (end() refuses it).
    if (!this.values.has(key)) this.values.set(key, sink);
    return sink;
  }

  end(): JobAttributes {
    this.feed(this.decoder.end());
    if (this.head !== null && this.head !== '') this.classify(true);
    this.list.endItem();
    const twice = USED.filter((k) => (this.seen.get(k) ?? 0) > 1);
    if (twice.length > 0) throw forged(twice.map((k) => [k, this.seen.get(k)!]));
    const raw: Record<string, string> = {};
    const oversized: string[] = [];
    for (const [k, sink] of this.values) {
      if (sink.oversized) oversized.push(k);
      else raw[k] = sink.value;
    }
    const sc = raw.start_count !== undefined && /^[0-9]{1,9}$/.test(raw.start_count) ? Number(raw.start_count) : undefined;
    return {
      raw,
      errorPath: stripHost(raw.Error_Path),
      outputPath: stripHost(raw.Output_Path),
      joinPath: raw.Join_Path,
      startCount: sc,
      jobState: raw.job_state,
      variables: this.list.variables,
      oversized,
      oversizedVariables: [...this.list.oversized],
    };
  }
}

function forged(counts: [string, number][]): JobFault {
  const names = counts.map(([k]) => k).join(', ');
  return new JobFault(`Torque's record of the job (qstat -f) shows ${names} more than once`, counts.map(([k, n]) => ({
    id: 'qstat-forged',
    where: 'the job\'s variables (qsub -v, -V, #PBS -v)',
    message: `${k} appears ${n} times: a variable's value holds a line break followed by text that reads as the job's ${k}`,
    fix: 'remove line breaks from the values of the variables you pass to qsub; with qsub -V, unset exported shell functions (unset -f NAME) or pass only the variables you need with -v',
  })));
}

/** Parses `qstat -f -1` output held in memory (tests, and callers that have it whole). */
export function parseQstat(text: string): JobAttributes {
  const p = new QstatParser();
  p.push(text);
  return p.end();
}

/** Torque writes paths as "host:/path". */
function stripHost(p: string | undefined): string | undefined {
  if (!p) return undefined;
  const i = p.indexOf(':/');
  return i >= 0 ? p.slice(i + 1) : p.startsWith('/') ? p : undefined;
}

/** Streams qstat's output through the parser: no cap on the whole, so a huge Variable_List is not a failure of the node. */
export async function qstatJob(config: Config, jobId: string): Promise<JobAttributes> {
  const parser = new QstatParser();
  await runTool(config.tools.qstat, ['-f', '-1', jobId], {
    timeout: config.timeouts.qstat * 1000,
    toolKey: 'qstat',
    onStdout: (chunk) => parser.push(chunk),
    maxBuffer: 1024 * 1024,
  });
  return parser.end();
}

/**
 * Whether Torque's server still has the job ('gone': qstat says Unknown Job
 * Id; 'completed': job_state C, kept only for keep_completed) or not. Torque's
 * qstat exits with PBSE_UNKJOBID (15001, so 153) and prints "Unknown Job Id"
 * for a job the server does not know (src/cmds/qstat.c run_job_mode, main);
 * both must hold. Any other failure throws: qstat could not say.
 */
export async function jobPresence(config: Config, jobId: string): Promise<'active' | 'completed' | 'gone'> {
  const parser = new QstatParser();
  const r = await runTool(config.tools.qstat, ['-f', '-1', jobId], {
    timeout: config.timeouts.qstat * 1000,
    toolKey: 'qstat',
    onStdout: (chunk) => parser.push(chunk),
    maxBuffer: 1024 * 1024,
    okExitCodes: [153],
  });
  if (r.exitCode === 153) {
    if (/Unknown Job Id/i.test(r.stderr)) return 'gone';
    throw new Error(`${config.tools.qstat} exited 153 without saying the job is unknown: ${r.stderr.trim().split('\n')[0]?.slice(0, 200) ?? ''}`);
  }
  try {
    return parser.end().jobState === 'C' ? 'completed' : 'active';
  } catch {
    return 'active'; // a record its variables forged: Torque still has the job
  }
}
