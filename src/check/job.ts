// `check --job SCRIPT`: what the prologue would make of a job script's #VM
// lines, without touching the node. Users run it before qsub. With --render
// DIR it also writes the cloud-init seed files each VM would get.
import { existsSync, mkdirSync, realpathSync } from 'node:fs';
import { userInfo, hostname } from 'node:os';
import { basename } from 'node:path';
import { loadConfig, parseConfig, DEFAULT_CONFIG_FILE } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { formatSize } from '../config/values.js';
import { readScriptHeader, scanDirectives } from '../request/directives.js';
import { EXIT_JOB_FAULT, EXIT_RUN, JobFault, NodeFault, isJobFault, type ExitCode, type Problem } from '../core/errors.js';
import { resolveScanned, type VmRequest } from '../request/resolve.js';
import { FAMILY_OF, VM_KEY_NAMES } from '../request/keys.js';
import { line, problemLine } from '../report/user.js';
import type { HookIO } from '../core/io.js';
import type { SeedBatch } from '../seed/index.js';

export interface CheckJobOptions {
  script: string;
  configFile: string;
  configExplicit: boolean;
  queue?: string;
  json: boolean;
  io: HookIO;
  /** --render DIR: write DIR/vm-<n>/{meta-data,user-data,network-config}. */
  render?: string;
  /** The batch system whose names the rendered seeds carry (core/engine.ts guestVars, terms); the entry point chooses it. */
  batch: SeedBatch;
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

export async function checkJob(o: CheckJobOptions): Promise<ExitCode> {
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
  const image = request ? await heldImage(request, config) : undefined;
  if (image?.problems.length) problems = image.problems;

  if (o.json) {
    o.io.out(JSON.stringify({ script: o.script, config: config.file, vmJob, ok: problems.length === 0, request, image: image?.json, problems, notes: [...notes, ...(image?.notes ?? [])] }, null, 2) + '\n');
  } else {
    for (const n of notes) o.io.out(line(n) + '\n');
    if (!vmJob) o.io.out(line(`${o.script}: not a VM job (no #VM lines)`) + '\n');
    else if (problems.length > 0 && image?.problems.length) {
      o.io.out(line(image.json.verdict === 'refused'
        ? `${o.script}: image ${request!.img} cannot be used on this site; the job would not start`
        : `${o.script}: image ${request!.img} does not meet this site's guest image requirements; the job would not start`) + '\n');
      for (const p of problems) o.io.out(problemLine(p) + '\n');
      for (const h of image.hints) o.io.out(line(h) + '\n');
    } else if (problems.length > 0) {
      o.io.out(line(`${o.script}: the #VM request has ${problems.length} problem${problems.length > 1 ? 's' : ''}; the job would not start`) + '\n');
      for (const p of problems) o.io.out(problemLine(p) + '\n');
    } else if (request) {
      o.io.out(line(`${o.script}: VM job; the request resolves to (config: ${config.file})`) + '\n');
      o.io.out(table(request));
      for (const n of image?.notes ?? []) o.io.out(line(n) + '\n');
    }
  }
  if (problems.length > 0) return EXIT_JOB_FAULT;
  if (o.render !== undefined && request) await renderSeeds(o, config, request);
  return EXIT_RUN;
}

interface HeldImage {
  /** The rules the image fails for this request, as the prologue would report them. */
  problems: Problem[];
  /** For a failing image: the pool images that pass. */
  hints: string[];
  notes: string[];
  /** refused: not in the pool, or not allowed (authorisation); fail: a held verdict fails the requirements. */
  json: { name: string; verdict: 'pass' | 'fail' | 'refused' | 'unknown' | 'not-checked-here'; heldBy?: 'node' | 'shared' };
}

/**
 * What this node, or the shared verdict directory, already knows of the
 * image, from the verdict store (image/verdicts.ts): never hashed, never
 * inspected here. A user's own image is checked on the node at job start,
 * from a file only root may read the verdict of.
 */
async function heldImage(request: VmRequest, config: Config): Promise<HeldImage> {
  const { authoriseImage } = await import('../image/authorise.js');
  const { heldVerdict, judge, poolHint, poolImagesFor, ruleProblems } = await import('../image/verdicts.js');
  const none = (verdict: HeldImage['json']['verdict'], note: string): HeldImage => ({ problems: [], hints: [], notes: [note], json: { name: request.img, verdict } });
  if (request.img.startsWith('/')) return none('not-checked-here', `image ${request.img} is your own: the node checks it when the job starts`);
  // A login node may have no pool (nor the admin's ini): only the request can be checked there.
  if (!existsSync(config.paths.image_pool)) return none('not-checked-here', `the image pool ${config.paths.image_pool} is not on this machine: image ${request.img} is checked on the node when the job starts`);
  let img;
  try {
    img = await authoriseImage({ img: request.img, config, ownerUid: process.getuid?.() });
  } catch (e) {
    if (isJobFault(e)) return { problems: [...e.problems], hints: [], notes: [], json: { name: request.img, verdict: 'refused' } };
    return none('not-checked-here', `image ${request.img} was not looked up here (${(e as Error).message}); the node checks it when the job starts`);
  }
  const held = heldVerdict(img, config);
  if (!held) return none('unknown', `image ${img.name} has not been checked on this node yet; the node checks it when the job starts`);
  const want = { distro: request.distro, arch: request.arch, vrdma: request.vrdma };
  const { failed, warned } = judge(held.verdict, want, config);
  const heldBy = held.where === 'node' ? 'this node' : 'the shared verdict directory';
  const warnings = warned.map((w) => `warning: image ${img.name} fails ${w.id}: ${w.message}${w.fix ? `. Fix: ${w.fix}` : ''}`);
  if (failed.length === 0) {
    return { problems: [], hints: [], notes: [`image ${img.name} meets this site's guest image requirements (verdict held by ${heldBy})`, ...warnings], json: { name: img.name, verdict: 'pass', heldBy: held.where } };
  }
  return {
    problems: ruleProblems(img.name, failed, heldBy),
    hints: poolHint(await poolImagesFor(config, want)),
    notes: warnings,
    json: { name: img.name, verdict: 'fail', heldBy: held.where },
  };
}

/**
 * The seeds the job's VMs on one node would get, as plain files for reading:
 * as the user running check, from this directory (the submit directory), with a
 * made-up job id. Nothing in the cache or job directories is touched, and
 * [seed] network_command is not run.
 */
async function renderSeeds(o: CheckJobOptions, config: Config, request: VmRequest): Promise<void> {
  const { renderSeed, seedShared } = await import('../seed/index.js');
  const { writeFileAtomic } = await import('../tools/atomic.js');
  const me = userInfo();
  const group = await primaryGroup(config, me.gid);
  const node = hostname().split('.')[0] ?? 'localhost';
  const jobId = `0.${node}`;
  const family = request.family ?? FAMILY_OF[config.defaults.distro];
  if (request.family === null) o.io.out(line(`the image decides the distro; rendering for [defaults] distro (${config.defaults.distro})`) + '\n');
  mkdirSync(o.render!, { recursive: true, mode: 0o700 });
  const shared = seedShared();
  for (let i = 0; i < request.vms_per_node; i++) {
    const r = await renderSeed({
      config, batch: o.batch, request, family, node, dryRun: true, shared,
      job: { id: jobId, user: me.username, group, name: basename(o.script), workdir: process.cwd() },
      vm: { index: i, count: request.vms_per_node, jobIndex: i },
      owner: { uid: me.uid, gid: me.gid, fileMode: 0o600, dirMode: 0o700 }, dir: o.render!, overlay: '',
    });
    const dir = `${o.render}/vm-${i}`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileAtomic(`${dir}/meta-data`, r.metaData, 0o600);
    writeFileAtomic(`${dir}/user-data`, r.userData, 0o600);
    if (r.networkConfig !== undefined) writeFileAtomic(`${dir}/network-config`, r.networkConfig, 0o600);
    for (const n of r.notes) o.io.out(line(n) + '\n');
    o.io.out(line(`seed for VM ${i} (${r.hostname}, ${config.seed.media} medium at job start): ${dir}/`) + '\n');
  }
}

async function primaryGroup(config: Config, gid: number): Promise<string> {
  const { groupOf } = await import('../tools/nss.js');
  const name = (await groupOf(config, String(gid)))?.group;
  if (!name) throw new NodeFault(`your group ${gid} is not known to getent`, [{ id: 'seed-account', where: `getent group ${gid}`, message: 'found nothing', fix: "check this host's NSS (LDAP/SSSD)" }]);
  return name;
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
