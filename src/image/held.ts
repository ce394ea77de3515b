// Verdicts already held for pool images, found without hashing or running
// libguestfs: the digest from the node's stat memo or the pool's SHA256SUMS,
// the verdict from the node's store or [paths] shared_verdicts. What a user
// reads about images (check --job, a refused job's hint, the submit filter)
// comes from here, so a node that holds a failing verdict never says "fine".
import { readFileSync, readdirSync, statSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import type { Family } from '../request/keys.js';
import { authoriseImage, type AuthorisedImage } from './authorise.js';
import { CHECKER_VERSION, memoDigest, policyHash, readVerdict, type Verdict } from './verify.js';
import { RULE_IDS, evaluateRules, familyOf, type Expectation, type RuleResult } from './rules.js';

export interface HeldVerdict {
  verdict: Verdict;
  digest: string;
  /** Which store holds it: this node's cache, or the directory all nodes share. */
  where: 'node' | 'shared';
}

/** The pool's own word for the image's digest, when it can be trusted for the file as it is now. */
export function listedDigest(img: AuthorisedImage, config: Config): string | undefined {
  if (img.origin !== 'pool') return undefined;
  const file = `${config.paths.image_pool}/SHA256SUMS`;
  try {
    // Listed after the image last changed, or checked against it by the prologue anyway.
    if (!config.policy.require_checksums && statSync(file).mtimeMs < img.stat.mtimeMs) return undefined;
    const rel = img.path.slice(img.path.lastIndexOf('/') + 1);
    for (const l of readFileSync(file, 'utf8').split('\n')) {
      const m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(l);
      if (m && (m[2] === img.name || m[2] === rel)) return m[1]!.toLowerCase();
    }
  } catch {
    /* no list: no digest, no verdict */
  }
  return undefined;
}

/** A verdict another node stored in [paths] shared_verdicts, under the name verify.ts gives it. */
export function sharedVerdict(config: Config, digest: string): Verdict | undefined {
  const dir = config.paths.shared_verdicts;
  if (!dir) return undefined;
  try {
    const text = readFileSync(`${dir}/${digest}-v${CHECKER_VERSION}-${policyHash(config)}.json`, 'utf8');
    const v = JSON.parse(text) as Verdict;
    if (v.checker === CHECKER_VERSION && v.digest === digest && v.policy === policyHash(config) && v.facts && typeof v.facts.exists === 'object' && v.format?.format) return v;
  } catch {
    /* none, or unreadable, or foreign: the node verifies */
  }
  return undefined;
}

/**
 * The verdict held for a pool image, if any. The stat memo is root's (the
 * prologue's, and check --job run as root); a user gets the SHA256SUMS digest.
 */
export function heldVerdict(img: AuthorisedImage, config: Config): HeldVerdict | undefined {
  if (img.origin !== 'pool') return undefined;
  for (const digest of new Set([memoDigest(img, config), listedDigest(img, config)])) {
    if (!digest) continue;
    const node = readVerdict(config, digest);
    if (node) return { verdict: node, digest, where: 'node' };
    const shared = sharedVerdict(config, digest);
    if (shared) return { verdict: shared, digest, where: 'shared' };
  }
  return undefined;
}

/** The rules of a held verdict against a request; `failed` are the ones at level error. */
export function judge(held: HeldVerdict, want: Expectation, config: Config): { rules: RuleResult[]; failed: RuleResult[]; family?: Family } {
  const rules = evaluateRules(held.verdict.facts, want, config);
  return { rules, failed: rules.filter((r) => !r.ok && r.level === 'error'), family: familyOf(held.verdict.facts) };
}

// A pool is the admin's few dozen images, not a file tree to walk without end.
const MAX_POOL_ENTRIES = 500;
const MAX_DEPTH = 2;

/** Image names in the pool (relative paths, as #VM img= takes them), in name order. */
function poolNames(pool: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, prefix: string, depth: number) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (out.length >= MAX_POOL_ENTRIES) return;
      if (e.name.startsWith('.') || e.name === 'SHA256SUMS') continue;
      if (e.isDirectory() && depth < MAX_DEPTH) walk(`${dir}/${e.name}`, `${prefix}${e.name}/`, depth + 1);
      else if (e.isFile()) out.push(`${prefix}${e.name}`);
    }
  };
  walk(pool, '', 1);
  return out;
}

export interface PoolListing {
  /** Pool images whose held verdict meets the requirements for the request. */
  passing: string[];
  /** Pool images with no verdict held here: nobody knows yet. */
  unknown: number;
}

/** Which pool images are known to pass for this request. Never hashes an image nor runs libguestfs. */
export async function poolImagesFor(config: Config, want: Expectation): Promise<PoolListing> {
  const passing: string[] = [];
  let unknown = 0;
  for (const name of poolNames(config.paths.image_pool)) {
    let img: AuthorisedImage;
    try {
      img = await authoriseImage({ img: name, config });
    } catch {
      continue;
    }
    const held = heldVerdict(img, config);
    if (!held) unknown++;
    else if (judge(held, want, config).failed.length === 0) passing.push(name);
  }
  return { passing, unknown };
}

// What the user can only fix by choosing another image: the requirements and the format checks.
const IMAGE_IDS: ReadonlySet<string> = new Set([
  ...RULE_IDS, 'vmdk-extent', 'backing-file', 'corrupt', 'format-mismatch', 'data-file', 'encrypted', 'too-large', 'format-not-allowed',
]);

/** Does this rejection concern the image itself (another image would do), rather than the request? */
export function isImageRejection(problems: readonly { id: string }[]): boolean {
  return problems.length > 0 && problems.some((p) => IMAGE_IDS.has(p.id));
}

const MAX_LISTED = 20;

/** The hint for a rejected image: the pool images that pass, or that none is known to. Plain text for report/user.ts line(). */
export function poolHint(l: PoolListing): string[] {
  const others = l.unknown > 0 ? `${l.unknown} other pool image${l.unknown > 1 ? 's have' : ' has'} not been checked yet on this node` : '';
  if (l.passing.length === 0) {
    return [`no pool image is known yet to meet the requirements for this request${others ? ` (${others})` : ''}. Fix: ask your admin which image to use`];
  }
  const shown = l.passing.slice(0, MAX_LISTED).join(', ') + (l.passing.length > MAX_LISTED ? `, ... (${l.passing.length - MAX_LISTED} more)` : '');
  return [
    `pool images known to meet the requirements for this request: ${shown}. Fix: pick one with #VM img=NAME`,
    ...(others ? [`${others}; it may meet them too`] : []),
  ];
}
