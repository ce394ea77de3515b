// `vsub`: vTorque's submit command, so vTorque users keep typing what they
// know. It takes qsub's options plus vTorque's `-vm key=value,...`, and submits
// through the real qsub. Read from vTorque's src/vsub:
// -vm may be repeated; -gf (development mode: generate vTorque's wrapper files,
// do not submit) and, in older versions, -listImages are its own options; a
// script's `#PBS -vm` lines are requests too.
//
// What it does here:
// - no VM request anywhere (no -vm, no #PBS -vm line in the script file): it
//   runs qsub with the same argv, working directory, environment and terminal,
//   so it is qsub;
// - otherwise it reads the script (the file, or stdin), adds one `#VM` line per
//   -vm right after the shebang, turns the script's own `#PBS -vm` lines into
//   #VM lines, and gives the result to qsub on stdin. Nothing else in the
//   script changes. qsub names a file job after the file's base name when
//   neither the command line nor the script gives -N (qsub_functions.c, main
//   path before get_script), so vsub passes that name as -N in that case;
// - what it cannot do here is refused before qsub runs, with the reason.
// It runs as the submitting user with nothing of root's: the script it reads
// is the user's own.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { closest, controlCharIn, quote } from '../config/values.js';
import { DEFAULT_CONFIG_FILE } from '../config/peek.js';
import { rawValue, readIniLenient } from '../config/ini.js';
import { isVmKey, VM_KEY_NAMES } from '../request/keys.js';
import { HEADER_CAP, scanDirectives } from '../request/directives.js';
import type { Problem } from '../core/errors.js';
import { problemLine, line } from '../report/user.js';
import { HELP } from '../help.js';
import { parseQsubArgs, qsubHeader, WITH_ARG } from './qsub.js';
import { refuseMisreadVm, rewritePbsVm } from './pbs-vm.js';

/** A submission vsub will not make; `problems` say what, where and how to fix it. */
class Refusal extends Error {
  constructor(message: string, readonly problems: Problem[] = []) {
    super(message);
  }
}

const EXIT_REFUSED = 1;

export interface VsubArgs {
  /** qsub's argv, -vm and its values taken out, in the user's order. */
  qsub: string[];
  /** Each -vm value, in order. */
  vm: string[];
  /** Index in `qsub` of the job script operand, if one was given. */
  scriptAt?: number;
  /** Loose words after the script: qsub ignores them for a batch job. */
  extra: string[];
  interactive: boolean;
}

// vTorque's own options that have no meaning here, and why (doc/user.md has the same table).
const REFUSED: Record<string, { why: string; fix: string }> = {
  '-gf': {
    why: "vTorque's -gf (development mode) generates its wrapper scripts without submitting; nothing is generated at submit time here",
    fix: 'drop -gf; to see what the node would make of a script, run: vtorque-prologue check --job SCRIPT',
  },
  '-listImages': {
    why: "vTorque's -listImages listed its image directory; the image pool here is the admin's and may not be readable from this host",
    fix: 'ask your admin which images the pool holds, and try one with: vtorque-prologue check --image NAME',
  },
};

/**
 * Splits vsub's argv the way Torque 6's qsub reads its own (GNU getopt, which
 * also takes options after the script; the script is the first loose word,
 * as in find_job_script_index), taking out -vm and its value.
 */
export function parseVsubArgs(argv: readonly string[]): VsubArgs {
  const out: VsubArgs = { qsub: [], vm: [], extra: [], interactive: false };
  const loose = (w: string) => {
    if (out.scriptAt === undefined) out.scriptAt = out.qsub.length;
    else out.extra.push(w);
    out.qsub.push(w);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.qsub.push(a);
      for (const w of argv.slice(i + 1)) loose(w);
      break;
    }
    if (a === '-vm') {
      const v = argv[++i];
      if (v === undefined) throw new Refusal('-vm needs a value', [{ id: 'vm', where: 'vsub -vm', message: 'nothing follows -vm', fix: 'write -vm key=value[,key=value...], e.g. -vm img=debian12.qcow2,vcpus=4' }]);
      out.vm.push(v);
      continue;
    }
    const refused = REFUSED[a];
    if (refused) throw new Refusal(`${a} is not supported`, [{ id: 'option', where: `vsub ${a}`, message: refused.why, fix: refused.fix }]);
    if (a.startsWith('-vm')) {
      // qsub would read it as -v "m...": a job variable, and the VM request lost.
      throw new Refusal(`${quote(a, 60)} is not a VM request`, [{
        id: 'vm', where: `vsub ${quote(a, 60)}`, message: `qsub would take it as the job variable list -v ${quote(a.slice(2), 60)}`,
        fix: `for a VM request put a blank after -vm: -vm ${a.slice(3)}; for job variables write -v ${a.slice(2)}`,
      }]);
    }
    if (!a.startsWith('-') || a === '-') {
      loose(a);
      continue;
    }
    out.qsub.push(a);
    if (a.startsWith('--')) continue; // --version, --about: qsub's own
    for (let j = 1; j < a.length; j++) {
      const c = a[j]!;
      if (c === 'I') out.interactive = true;
      if (!WITH_ARG.has(c)) continue;
      if (j === a.length - 1 && argv[i + 1] !== undefined) out.qsub.push(argv[++i]!);
      break;
    }
  }
  return out;
}

/** The options given before the qsub arguments: --config FILE, --help. */
function globalOptions(argv: readonly string[]): { configFile: string; help: boolean; rest: readonly string[] } {
  let configFile = DEFAULT_CONFIG_FILE;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config' && argv[i + 1] !== undefined) configFile = argv[++i]!;
    else if (a.startsWith('--config=')) configFile = a.slice('--config='.length);
    else if (a === '--help') return { configFile, help: true, rest: [] };
    else break;
  }
  return { configFile, help: false, rest: argv.slice(i) };
}

const isExecutableFile = (p: string): boolean => {
  try {
    accessSync(p, constants.X_OK);
    return statSync(p).isFile();
  } catch {
    return false;
  }
};

/**
 * The qsub the user would get by typing qsub: the first on PATH (absolute
 * entries only) that is not vsub itself, as a site may have named its vTorque
 * wrapper qsub. Else the qsub next to [tools] qstat of the ini, when the ini
 * is readable here.
 */
export function findQsub(path: string | undefined, self: string | undefined, configFile: string): string | undefined {
  let me: string | undefined;
  try {
    me = self === undefined ? undefined : realpathSync(self);
  } catch {
    me = undefined;
  }
  for (const dir of (path ?? '').split(':')) {
    if (!isAbsolute(dir)) continue;
    const p = join(dir, 'qsub');
    if (!isExecutableFile(p)) continue;
    try {
      if (me !== undefined && realpathSync(p) === me) continue;
    } catch {
      continue;
    }
    return p;
  }
  // No readable ini here: PATH was the only way.
  const qstat = rawValue(readIniLenient(configFile), 'tools', 'qstat');
  if (typeof qstat === 'string' && isAbsolute(qstat)) {
    const p = join(dirname(qstat), 'qsub');
    if (isExecutableFile(p)) return p;
  }
  return undefined;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** A piped script, whole: qsub would read it whole too. */
function readAllStdin(): Buffer {
  const parts: Buffer[] = [];
  const buf = Buffer.alloc(1024 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      // A non-blocking stdin (a terminal or pipe set so by the caller): wait, then read on.
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(sleeper, 0, 0, 2);
      continue;
    }
    if (n === 0) break;
    parts.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(parts);
}

/** The script file, as qsub would take it: a regular file (qsub: "script not a file"). */
function readScript(script: string): Buffer {
  let why: string;
  try {
    if (statSync(script).isFile()) return readFileSync(script);
    why = 'not a regular file';
  } catch (e) {
    why = (e as NodeJS.ErrnoException).code ?? String(e);
  }
  throw new Refusal(`the job script ${quote(script, 200)} cannot be read`, [{ id: 'script', where: quote(script, 200), message: `cannot be read (${why})`, fix: 'give the path of your job script, relative to the current directory or absolute' }]);
}

/** The header the scanner reads: at most HEADER_CAP bytes, cut after the last whole line when more follow. */
function headerOf(script: Buffer): Buffer {
  if (script.length <= HEADER_CAP) return script;
  return script.subarray(0, script.lastIndexOf(0x0a, HEADER_CAP - 1) + 1);
}

/** The #VM lines for the -vm values, each checked before it can become a line of the script. */
function vmLines(values: readonly string[], scriptName: string, scriptScan: ReturnType<typeof scanDirectives>): string[] {
  const problems: Problem[] = [];
  const seen = new Map<string, string>();
  for (const d of scriptScan.directives) if (!seen.has(d.key.toLowerCase())) seen.set(d.key.toLowerCase(), `on line ${d.line} of ${scriptName}`);
  const given = new Set<string>();
  for (const v of values) {
    // A line break would add a line of its own to the script: refused, never escaped.
    const ctl = controlCharIn(v);
    if (ctl) {
      problems.push({ id: 'vm', where: 'vsub -vm', message: `${quote(v, 60)} contains ${ctl}`, fix: 'retype the value: key=value[,key=value...] on one line' });
      continue;
    }
    const scan = scanDirectives(`#VM ${v}\n`);
    for (const p of scan.problems) problems.push({ ...p, where: 'vsub -vm', fix: p.fix?.replace(/#VM /g, '-vm ') });
    for (const d of scan.directives) {
      const key = d.key.toLowerCase();
      if (!isVmKey(key)) {
        const hint = closest(key, VM_KEY_NAMES);
        problems.push({ id: 'unknown-key', where: 'vsub -vm', message: `unknown key ${quote(d.key, 40)}`, fix: hint ? `did you mean ${hint}?` : `use one of: ${VM_KEY_NAMES.join(', ')}` });
      } else if (given.has(key)) {
        problems.push({ id: key, where: 'vsub -vm', message: `${key} is given twice`, fix: `keep one ${key}=` });
      } else if (seen.has(key)) {
        problems.push({ id: key, where: 'vsub -vm', message: `${key} is given by vsub -vm and ${seen.get(key)}`, fix: `keep one: drop ${key}= from the vsub command line or from the script` });
      }
      given.add(key);
    }
  }
  if (problems.length > 0) throw new Refusal(`the -vm request has ${problems.length} problem${problems.length > 1 ? 's' : ''}`, problems);
  return values.map((v) => `#VM ${v}`);
}

/** The script qsub gets: #VM lines after the shebang, #PBS -vm lines rewritten, every other byte as it was. */
export function composeScript(script: Buffer, vm: readonly string[], scriptName: string, prefix: string): { script: Buffer; notes: string[]; name?: string } {
  const head = headerOf(script);
  const scan = scanDirectives(head.toString('utf8'));
  if (scan.problems.length > 0) {
    throw new Refusal(`the #VM request in ${scriptName} has ${scan.problems.length} problem${scan.problems.length > 1 ? 's' : ''}`, scan.problems.map((p) => ({ ...p, where: `${p.where} of ${scriptName}` })));
  }
  const lines = vmLines(vm, scriptName, scan);
  let rewritten = rewritePbsVm(head, scan.pbsVmLines);
  const header = qsubHeader(rewritten.toString('latin1'), prefix);
  try {
    refuseMisreadVm(header.directives);
  } catch (e) {
    const p = (e as { problems: Problem[] }).problems;
    throw new Refusal((e as Error).message, p.map((x) => ({ ...x, where: `${x.where} of ${scriptName}` })));
  }
  const name = header.directives.map((d) => parseQsubArgs(d.words).name).filter((n) => n !== undefined).at(-1);
  if (lines.length > 0) {
    const text = rewritten.toString('latin1');
    const first = text.indexOf('\n');
    const crlf = first > 0 && text[first - 1] === '\r';
    const eol = crlf ? '\r\n' : '\n';
    const add = Buffer.from(lines.map((l) => l + eol).join(''), 'utf8');
    if (text.startsWith('#!')) {
      const at = first < 0 ? rewritten.length : first + 1;
      const sep = first < 0 ? Buffer.from(eol) : Buffer.alloc(0);
      rewritten = Buffer.concat([rewritten.subarray(0, at), sep, add, rewritten.subarray(at)]);
    } else {
      rewritten = Buffer.concat([add, rewritten]);
    }
  }
  return { script: Buffer.concat([rewritten, script.subarray(head.length)]), notes: scan.notes.filter((n) => n.startsWith('line')), name };
}

function report(e: Refusal, err: (s: string) => void): void {
  err([line(`vsub: job not submitted: ${e.message}`), ...e.problems.map((p) => problemLine(p))].join('\n') + '\n');
}

export interface VsubIO {
  env: NodeJS.ProcessEnv;
  err: (s: string) => void;
  out: (s: string) => void;
  /** The path this vsub was started as, so it never runs itself as qsub. */
  self?: string;
}

export async function vsubMain(argv: readonly string[], io: VsubIO = { env: process.env, err: (s) => process.stderr.write(s), out: (s) => process.stdout.write(s), self: process.argv[1] }): Promise<number> {
  const g = globalOptions(argv);
  if (g.help) {
    io.out(HELP.vsub + '\n');
    return 0;
  }
  try {
    const a = parseVsubArgs(g.rest);
    if (a.interactive && a.vm.length > 0) {
      throw new Refusal('-vm with -I: an interactive job has no script to carry the VM request', [{
        id: 'vm', where: 'vsub -I -vm', message: 'interactive VM jobs are not supported (vTorque did not support them either)',
        fix: 'put the work in a job script with #VM lines and submit it: vsub -vm key=value,... SCRIPT',
      }]);
    }
    const qsub = findQsub(io.env.PATH, io.self, g.configFile);
    if (!qsub) {
      throw new Refusal('qsub is not on your PATH', [{ id: 'qsub', where: 'PATH', message: `no qsub in ${quote(io.env.PATH ?? '', 200)}, nor next to [tools] qstat of ${g.configFile}`, fix: "add Torque's bin directory to PATH (where 'qstat' is), or ask your admin where qsub is" }]);
    }
    const script = a.scriptAt === undefined ? undefined : a.qsub[a.scriptAt]!;
    const fromFile = script !== undefined && script !== '-';
    let input: Buffer | undefined;
    let args = a.qsub;
    if (!a.interactive && (a.vm.length > 0 || fromFile)) {
      const body = fromFile ? readScript(script) : readAllStdin();
      const name = fromFile ? basename(script) : 'STDIN';
      const prefix = parseQsubArgs(a.qsub.filter((_, i) => i !== a.scriptAt)).prefix ?? io.env.PBS_DPREFIX ?? '#PBS';
      const pbsVm = scanDirectives(headerOf(body).toString('utf8')).pbsVmLines.length > 0;
      if (a.vm.length > 0 || pbsVm) {
        if (a.extra.length > 0) {
          throw new Refusal(`${quote(a.extra[0]!, 60)} follows the job script`, [{ id: 'operand', where: `vsub ... ${quote(script ?? '', 60)} ${quote(a.extra[0]!, 60)}`, message: 'qsub takes one job script and ignores what follows it', fix: 'pass arguments to the script with -F "ARGS", or remove them' }]);
        }
        const c = composeScript(body, a.vm, name, prefix);
        for (const n of c.notes) io.err(line(n) + '\n');
        input = c.script;
        args = a.qsub.filter((_, i) => i !== a.scriptAt);
        // qsub's own default name for a script file (its base name), which a script read from stdin would lose.
        // No loose word is left in args (extra ones were refused), so parseQsubArgs sees every option.
        if (fromFile && c.name === undefined && parseQsubArgs(args).name === undefined) args = ['-N', name, ...args];
      }
    }
    return runQsub(qsub, args, input);
  } catch (e) {
    if (!(e instanceof Refusal)) throw e;
    report(e, io.err);
    return EXIT_REFUSED;
  }
}

/**
 * Runs qsub as the user's foreground command: its own working directory
 * (PBS_O_WORKDIR), environment (-V exports it) and terminal (-I), no timeout
 * (an interactive job lasts as long as its session). That is why this is not
 * tools/run.ts's runTool, which gives a tool '/' as cwd, a clean environment
 * and a deadline; like it, the path is absolute and argv never meets a shell.
 */
function runQsub(qsub: string, args: readonly string[], input: Buffer | undefined): number {
  // The terminal's ^C and ^\ reach qsub too (same process group): qsub decides, as under a shell.
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGQUIT', ignore);
  try {
    const r = spawnSync(qsub, [...args], {
      stdio: [input === undefined ? 'inherit' : 'pipe', 'inherit', 'inherit'],
      input,
      maxBuffer: Infinity,
    });
    if (r.error) {
      process.stderr.write(line(`vsub: ${qsub} could not be started (${(r.error as NodeJS.ErrnoException).code ?? r.error.message}). Fix: check that it is Torque's qsub and executable`) + '\n');
      return EXIT_REFUSED;
    }
    if (r.status !== null) return r.status;
    return 128 + (r.signal ? ((osConstants.signals as Record<string, number>)[r.signal] ?? 0) : 0);
  } finally {
    process.off('SIGINT', ignore);
    process.off('SIGQUIT', ignore);
  }
}
