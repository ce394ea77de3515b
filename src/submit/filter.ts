// `submit-filter`: Torque's SUBMITFILTER. qsub runs it as the submitting user
// with the job script on stdin and qsub's own arguments as argv, and submits
// whatever it prints on stdout; a non-zero exit refuses the job and the user
// sees its stderr. So a bad #VM request is refused at qsub time, with the
// messages the prologue would give hours later.
//
// This file is the fast path and runs for every qsub on the cluster: it reads
// the script header, decides whether the job could be a VM job and, if not,
// copies stdin to stdout unchanged without loading anything heavy. VM jobs go
// to submit/vm.ts (in the heavy bundle). Nothing passes on an error: a broken
// filter refuses the job rather than letting a bad script through unchecked.
import { readSync, writeSync } from 'node:fs';
import { peekConfig } from '../config/peek.js';
import { HEADER_CAP, scanDirectives } from '../request/directives.js';
import { EXIT_RUN, type ExitCode } from '../core/errors.js';
import { heavy } from '../lazy.js';
import { directiveOptions, parseQsubArgs, qsubHeader, type QsubArgs } from './qsub.js';
import { refuseMisreadVm, rewritePbsVm } from './pbs-vm.js';

export interface SubmitFilterOptions {
  /** qsub's arguments, as qsub passed them to the filter. */
  argv: readonly string[];
  configFile: string;
  configExplicit: boolean;
  env: NodeJS.ProcessEnv;
  /** Where the script comes from and where it goes; fds 0 and 1 in production. */
  inFd: number;
  outFd: number;
  err: (text: string) => void;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** read(2) that waits out EAGAIN: qsub's pipe may be non-blocking. Returns 0 at end of input. */
function readSome(fd: number, buf: Buffer, off: number): number {
  for (;;) {
    try {
      return readSync(fd, buf, off, buf.length - off, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(sleeper, 0, 0, 2);
    }
  }
}

function writeAll(fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(sleeper, 0, 0, 2);
    }
  }
}

/** The first HEADER_CAP bytes of the script (and one more, to know whether more follow). */
function readHead(fd: number): { head: Buffer; more: boolean } {
  const buf = Buffer.alloc(HEADER_CAP + 1);
  let got = 0;
  while (got < buf.length) {
    const n = readSome(fd, buf, got);
    if (n === 0) break;
    got += n;
  }
  if (got <= HEADER_CAP) return { head: buf.subarray(0, got), more: false };
  return { head: buf.subarray(0, got), more: true };
}

/** Copies the rest of stdin through: a 1 GiB script is streamed, never held in memory. */
function copyRest(inFd: number, outFd: number | undefined): void {
  const buf = Buffer.alloc(1024 * 1024);
  for (;;) {
    const n = readSome(inFd, buf, 0);
    if (n === 0) return;
    if (outFd !== undefined) writeAll(outFd, buf.subarray(0, n));
  }
}

/** Everything the fast path found out; submit/vm.ts takes it from here. */
export interface FilterContext {
  /** The script's first bytes, cut after the last whole line when more follow. */
  head: Buffer;
  qsub: QsubArgs;
  /** -V on the command line or in a directive: qsub's environment becomes job variables. */
  exportEnv: boolean;
  prefix: string;
  queue?: string;
  env: NodeJS.ProcessEnv;
  configFile: string;
  configExplicit: boolean;
}

/**
 * Could this job be a VM job, or carry something only the VM path may judge?
 * False positives cost a slower qsub; false negatives would let a request
 * through unchecked, so every source of a request is looked at.
 */
function needsVmPath(c: FilterContext, vmLines: number, latin1: string): boolean {
  if (vmLines > 0) return true;
  // A VTORQUE_REQUEST or VM_<KEY> in the header's #PBS -v lines or in qsub -v.
  if (latin1.includes('VTORQUE_REQUEST') || latin1.includes('VM_')) return true;
  if (c.qsub.vLists.some((v) => v.includes('VTORQUE_REQUEST') || v.includes('VM_'))) return true;
  // qsub -V passes the whole environment, a stale VTORQUE_REQUEST from a VM job included.
  if (c.exportEnv && Object.keys(c.env).some((k) => k === 'VTORQUE_REQUEST' || k.startsWith('VM_'))) return true;
  if (c.queue !== undefined) {
    const q = c.queue.split('@')[0]!;
    if (q !== '' && peekConfig(c.configFile).vmQueues.includes(q)) return true;
  }
  return false;
}

export async function runSubmitFilter(o: SubmitFilterOptions): Promise<ExitCode> {
  let head: Buffer = Buffer.alloc(0);
  let more = false;
  let passed = false;
  const notes: string[] = [];
  try {
    ({ head, more } = readHead(o.inFd));
    // A cut header ends at its last whole line, so no line is judged by half of it.
    let view = head;
    if (more) {
      const nl = head.lastIndexOf(0x0a, HEADER_CAP - 1);
      view = head.subarray(0, nl + 1);
    }
    const scan = scanDirectives(view.toString('utf8'));
    // vTorque's #PBS -vm lines become the #VM lines they mean, before qsub (and the rest of this filter) reads them.
    if (scan.pbsVmLines.length > 0) {
      const rest = head.subarray(view.length);
      view = rewritePbsVm(view, scan.pbsVmLines);
      head = Buffer.concat([view, rest]);
    }
    const qsub = parseQsubArgs(o.argv);
    const prefix = qsub.prefix ?? o.env.PBS_DPREFIX ?? '#PBS';
    const latin1 = view.toString('latin1');
    const header = qsubHeader(latin1, prefix);
    refuseMisreadVm(header.directives);
    // The command line is read after the script, so its -q wins, as in qsub.
    let queue = qsub.queue;
    let exportEnv = qsub.exportEnv;
    for (const d of header.directives) {
      const opts = directiveOptions(d);
      if (qsub.queue === undefined) queue = opts.queue ?? queue;
      exportEnv ||= opts.exportEnv;
    }
    const c: FilterContext = { head: view, qsub, exportEnv, prefix, queue, env: o.env, configFile: o.configFile, configExplicit: o.configExplicit };

    if (!needsVmPath(c, scan.vmLines, latin1.slice(0, header.lines.at(-1)?.end ?? 0))) {
      // Not a VM job. Still worth saying: a #VM line the prologue will ignore.
      for (const n of scan.notes) if (n.startsWith('line ')) o.err(`vtorque: ${n}\n`);
      passed = true;
      writeAll(o.outFd, head);
      copyRest(o.inFd, o.outFd);
      return EXIT_RUN;
    }
    const h = await heavy();
    const out = await h.filterVmJob(c, scan, notes);
    for (const n of notes.splice(0)) o.err(h.line(n) + '\n');
    passed = true;
    writeAll(o.outFd, out.head);
    writeAll(o.outFd, head.subarray(view.length));
    copyRest(o.inFd, o.outFd);
    return EXIT_RUN;
  } catch (e) {
    const h = await heavy();
    o.err([...notes.map((n) => h.line(n)), ...h.filterFailureReport(e)].join('\n') + '\n');
    // Read the rest, so qsub does not die of SIGPIPE before it shows our reason.
    try {
      if (!passed) copyRest(o.inFd, undefined);
    } catch {
      /* nothing more to read */
    }
    return h.filterExitCode(e);
  }
}
