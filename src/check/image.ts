// `check --image NAME|PATH...`: verify images and print the rule table.
// Admins run it after building an image; users before submitting. Several
// images share one libguestfs launch.
import { lstat, realpath } from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import { authoriseImage, describeImage, type AuthorisedImage } from '../image/authorise.js';
import { inspectImages, screenImage, type Screened } from '../image/verify.js';
import type { ImageReport } from '../image/verdicts.js';
import { EXIT_JOB_FAULT, EXIT_RUN, JobFault, isJobFault, type ExitCode, type Problem } from '../core/errors.js';
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
  const results: { name: string; problems?: Problem[]; report?: ImageReport }[] = [];
  const vo = { config: o.config, want: { distro: o.distro, arch: o.arch } };
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
  const failed = results.filter((r) => r.problems || r.report!.rules.some((x) => !x.ok && x.level === 'error'));
  if (o.json) {
    o.io.out(JSON.stringify(results.map((r) => ({
      image: r.name,
      ok: !failed.includes(r),
      problems: r.problems,
      sha256: r.report?.digest,
      format: r.report?.verdict.format,
      os: r.report?.verdict.facts.os,
      osv: r.report?.verdict.facts.osv,
      verdictFromCache: r.report?.fromCache,
      rules: r.report?.rules,
    })), null, 2) + '\n');
  } else {
    for (const r of results) o.io.out(render(r.name, r.problems, r.report));
    o.io.out(line(`${results.length - failed.length} of ${results.length} image${results.length > 1 ? 's' : ''} meet the requirements`) + '\n');
  }
  return failed.length > 0 ? EXIT_JOB_FAULT : EXIT_RUN;
}

function render(name: string, problems: Problem[] | undefined, r: ImageReport | undefined): string {
  const out: string[] = [''];
  if (problems) {
    out.push(line(`${name}: REJECTED before looking inside`));
    for (const p of problems) out.push(`  FAIL ${p.id.padEnd(22)} ${clean(p.message)}${p.fix ? `\n       ${''.padEnd(22)} fix: ${clean(p.fix)}` : ''}`);
    return out.join('\n') + '\n';
  }
  const f = r!.verdict.facts;
  const os = f.os ? `${f.os.product || f.os.distro} (${f.os.distro} ${f.os.major}, ${f.os.arch})` : f.osv ? 'OSv' : 'no OS found';
  out.push(line(`${name}: ${r!.verdict.format.format}, ${formatSize(r!.verdict.format.virtualSize)} virtual, ${clean(os)}, sha256 ${r!.digest.slice(0, 16)}${r!.fromCache ? ' (cached verdict)' : ''}`));
  for (const x of r!.rules) {
    const mark = x.level === 'off' ? 'off ' : x.ok ? 'ok  ' : x.level === 'warn' ? 'WARN' : 'FAIL';
    out.push(`  ${mark} ${x.id.padEnd(22)} ${clean(x.message)}${!x.ok && x.fix ? `\n       ${''.padEnd(22)} fix: ${clean(x.fix)}` : ''}`);
  }
  return out.join('\n') + '\n';
}
