// `check --image NAME|PATH...`: verify images and print the rule table.
// Admins run it after building an image; users before submitting. Several
// images share one libguestfs launch.
//
// Only root verifies: hashing an image, qemu-img and libguestfs on it, and
// keeping the digest and the verdict in the node's cache (root's: the stat
// memo is 0700, and a verdict a user could write would pass any image). A user
// gets the verdicts this node already holds for pool images, found without
// hashing (verdicts.ts heldVerdict: the pool's SHA256SUMS), and for the rest
// one sentence on why not and what to do instead.
import { lstat, realpath } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import { authoriseImage, describeImage, type AuthorisedImage } from '../image/authorise.js';
import { checkFormatHeader, inspectImages, reportFor, screenImage, type Screened } from '../image/verify.js';
import { heldVerdict, type ImageReport } from '../image/verdicts.js';
import { EXIT_JOB_FAULT, EXIT_NODE_FAULT, EXIT_RUN, JobFault, isJobFault, isVtorqueError, type ExitCode, type Problem } from '../core/errors.js';
import type { Distro } from '../request/keys.js';
import { clean, line } from '../report/user.js';
import type { HookIO } from '../core/io.js';

export interface CheckImageOptions {
  names: string[];
  config: Config;
  distro: Distro | null;
  arch: string;
  json: boolean;
  io: HookIO;
  /** Run by root, who may verify; default: this process's uid is 0. */
  root?: boolean;
}

interface Result {
  name: string;
  problems?: Problem[];
  report?: ImageReport;
  /** Run by a user: where the verdict shown came from. */
  heldBy?: string;
  /** Run by a user: why the image was not checked, and what to do. */
  notChecked?: string;
}

/** Absolute paths are checked where they are (an admin trying an image before it enters the pool). */
async function locate(name: string, config: Config): Promise<AuthorisedImage> {
  if (!name.startsWith('/')) return authoriseImage({ img: name, config });
  let real: string;
  try {
    real = await realpath(name);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new JobFault(`${name} cannot be found`, [{ id: 'not-found', where: name, message: `cannot be found (${code})`, fix: 'check the path' }]);
  }
  const st = await lstat(real);
  if (!st.isFile()) throw new JobFault(`${name} is not a regular file`, [{ id: 'not-regular', where: name, message: 'is not a regular file', fix: 'name an image file' }]);
  return describeImage(name, real, st, 'user');
}

export async function checkImages(o: CheckImageOptions): Promise<ExitCode> {
  const results: Result[] = [];
  const vo = { config: o.config, want: { distro: o.distro, arch: o.arch } };
  const root = o.root ?? process.getuid?.() === 0;
  if (!root) {
    for (const name of o.names) results.push(await heldOnly(name, o.config, vo));
  } else {
    const screened: Screened[] = [];
    for (const name of o.names) {
      try {
        // The cheap checks one image at a time, so one bad image does not hide the others.
        screened.push(await screenImage(await locate(name, o.config), vo));
        results.push({ name });
      } catch (e) {
        if (!isJobFault(e)) throw e;
        results.push({ name, problems: [...e.problems] });
      }
    }
    const reports = screened.length > 0 ? await inspectImages(screened, vo) : [];
    reports.forEach((r) => { results.find((x) => x.name === r.image.name && !x.problems)!.report = r; });
  }
  const failed = results.filter((r) => r.problems || r.report?.rules.some((x) => !x.ok && x.level === 'error'));
  const unchecked = results.filter((r) => r.notChecked !== undefined);
  if (o.json) {
    o.io.out(JSON.stringify(results.map((r) => ({
      image: r.name,
      ok: !failed.includes(r) && r.notChecked === undefined,
      checked: r.notChecked === undefined,
      notChecked: r.notChecked,
      heldBy: r.heldBy,
      problems: r.problems,
      sha256: r.report?.digest,
      format: r.report?.verdict.format,
      os: r.report?.verdict.facts.os,
      osv: r.report?.verdict.facts.osv,
      verdictFromCache: r.report?.fromCache,
      rules: r.report?.rules,
    })), null, 2) + '\n');
  } else {
    if (!root && unchecked.length > 0) o.io.out(line(USER_NOTE) + '\n');
    for (const r of results) o.io.out(r.notChecked !== undefined ? `\n${line(`${r.name}: not checked: ${r.notChecked}`)}\n` : render(r.name, r.problems, r.report, r.heldBy));
    const passed = results.length - failed.length - unchecked.length;
    o.io.out(line(`${passed} of ${results.length} image${results.length > 1 ? 's' : ''} meet the requirements${unchecked.length > 0 ? `; ${unchecked.length} not checked` : ''}`) + '\n');
  }
  // Not checked is no verdict either way: 2, as when the node cannot check.
  return failed.length > 0 ? EXIT_JOB_FAULT : unchecked.length > 0 ? EXIT_NODE_FAULT : EXIT_RUN;
}

const USER_NOTE = 'check --image run as a user shows only the verdicts this node holds: looking inside an image (hashing it, qemu-img, libguestfs) and keeping its verdict need root';

const notChecked = (name: string, why: string): Result => ({
  name,
  notChecked: `${why}. Fix: ask your admin to run vtorque-prologue check --image ${name} on a node; vtorque-prologue check --job SCRIPT checks your #VM lines and any verdict a node holds for their image; or submit the job: the node checks the image when it starts`,
});

/**
 * A user's check of one image: its name and header (cheap, read as the user),
 * then the verdict a node already holds, judged under this site's rule levels.
 * Nothing is hashed, run or written.
 */
async function heldOnly(name: string, config: Config, vo: { config: Config; want: { distro: Distro | null; arch: string } }): Promise<Result> {
  try {
    const img = await locate(name, config);
    if (img.origin !== 'pool') {
      return notChecked(name, 'it is a file of your own, outside the pool: no node keeps a verdict for it before a job of yours uses it');
    }
    checkFormatHeader(img, config);
    const held = heldVerdict(img, config);
    if (!held) {
      return notChecked(name, 'this node holds no verdict for it that you can find (it has not been checked here since it last changed, or the pool has no SHA256SUMS line for it)');
    }
    return { name, report: reportFor(img, held.digest, held.verdict, vo, true, false), heldBy: held.where === 'node' ? 'this node' : 'the shared verdict directory' };
  } catch (e) {
    if (isJobFault(e)) return { name, problems: [...e.problems] };
    // A pool or image this user may not read, or the admin's configuration: no verdict, not a crash.
    const why = isVtorqueError(e) ? e.message : (e as NodeJS.ErrnoException).code ?? String((e as Error).message);
    return notChecked(name, `it cannot be looked at as you (${why})`);
  }
}

function render(name: string, problems: Problem[] | undefined, r: ImageReport | undefined, heldBy?: string): string {
  const out: string[] = [''];
  if (problems) {
    out.push(line(`${name}: REJECTED before looking inside`));
    for (const p of problems) out.push(`  FAIL ${p.id.padEnd(22)} ${clean(p.message)}${p.fix ? `\n       ${''.padEnd(22)} fix: ${clean(p.fix)}` : ''}`);
    return out.join('\n') + '\n';
  }
  const f = r!.verdict.facts;
  const os = f.os ? `${f.os.product || f.os.distro} (${f.os.distro} ${f.os.major}, ${f.os.arch})` : f.osv ? 'OSv' : 'no OS found';
  out.push(line(`${name}: ${r!.verdict.format.format}, ${formatSize(r!.verdict.format.virtualSize)} virtual, ${clean(os)}, sha256 ${r!.digest.slice(0, 16)}${heldBy ? ` (verdict held by ${heldBy})` : r!.fromCache ? ' (cached verdict)' : ''}`));
  for (const x of r!.rules) {
    const mark = x.level === 'off' ? 'off ' : x.ok ? 'ok  ' : x.level === 'warn' ? 'WARN' : 'FAIL';
    out.push(`  ${mark} ${x.id.padEnd(22)} ${clean(x.message)}${!x.ok && x.fix ? `\n       ${''.padEnd(22)} fix: ${clean(x.fix)}` : ''}`);
  }
  return out.join('\n') + '\n';
}
