// #VM metadata=FILE: the user's own cloud-config, under [policy]
// user_cloud_config. deny refuses it. allowlist merges only keys that cannot
// give the user root in the VM; every other key is refused by name, since a
// silently dropped key would leave the user guessing.
import type { Config } from '../config/schema.js';
import { controlCharIn, quote } from '../config/values.js';
import { JobFault, type Problem } from '../core/errors.js';
import { loadYaml } from '../tools/yaml.js';
import type { Account } from './account.js';
import type { UserFile } from './guest-files.js';
import { readAsUser } from './user-files.js';

export const METADATA_CAP = 64 * 1024;

/** What allowlist merges, and why each is safe. */
export const ALLOWED_USER_KEYS = {
  write_files: 'files under your home or /workspace, written by your own user in the VM (so with your rights only)',
  packages: "packages from the image's configured repositories",
  timezone: 'the time zone',
} as const;

/** Keys refused with a reason of their own; anything else gets the generic one. */
const WHY: Record<string, string> = {
  runcmd: 'it runs commands as root', bootcmd: 'it runs commands as root', users: 'it creates users and sudo rules',
  groups: 'it can add you to admin groups', chpasswd: 'it sets passwords', ssh_authorized_keys: 'it authorises keys for the default user',
  disable_root: 'it re-enables root login', ssh_pwauth: 'it enables password logins', apt: 'it adds repositories and keys',
  yum_repos: 'it adds repositories', mounts: 'it mounts file systems as root', write_files_deferred: 'it is not a user key',
};

export interface UserCloudConfig {
  file: string;
  files: UserFile[];
  packages: string[];
  timezone?: string;
}

const fault = (file: string, problems: Problem[]) =>
  new JobFault(`metadata file ${quote(file, 60)} cannot be used`, problems);

export async function userCloudConfig(o: {
  config: Config; file: string | undefined; workdir: string | undefined; account: Account; signal?: AbortSignal;
}): Promise<UserCloudConfig | undefined> {
  const { config, file, account } = o;
  if (file === undefined) return undefined;
  const where = `metadata=${file}`;
  if (config.policy.user_cloud_config === 'deny') {
    throw fault(file, [{ id: 'metadata', where, message: 'this site does not merge user cloud-config into VMs ([policy] user_cloud_config = deny)', fix: 'remove #VM metadata=, and set up your VM from your job script instead' }]);
  }
  let path = file;
  if (!path.startsWith('/')) {
    if (!o.workdir) throw fault(file, [{ id: 'metadata', where, message: 'is a relative path and the job has no submit directory to read it from', fix: 'give an absolute path' }]);
    path = `${o.workdir.replace(/\/+$/, '')}/${path}`;
  }
  const r = await readAsUser(config, path, account, METADATA_CAP, o.signal);
  if (!r.ok) throw fault(file, [{ id: 'metadata', where: path, message: r.why, fix: r.missing ? 'check the path (relative paths start at the directory you ran qsub in)' : `give a regular file you can read, at most ${METADATA_CAP / 1024} KiB` }]);
  const text = r.text;
  // A FIFO or device reads as empty (see user-files.ts); an empty file merges nothing either way.
  if (text.trim() === '') throw fault(file, [{ id: 'metadata', where: path, message: 'is empty, or not a regular file', fix: 'give a #cloud-config file, or remove #VM metadata=' }]);
  const first = text.split('\n', 1)[0]!.trim();
  if (first.startsWith('#') && first !== '#cloud-config') {
    throw fault(file, [{ id: 'metadata', where: `${path} line 1`, message: `starts with ${quote(first, 30)}; only #cloud-config YAML is merged (no scripts, #include or MIME)`, fix: 'make the first line #cloud-config and write YAML keys below it' }]);
  }
  const { parseDocument } = await loadYaml();
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw fault(file, [{ id: 'metadata', where: `${path} line ${e.linePos?.[0]?.line ?? '?'}`, message: `is not valid YAML: ${e.message.split('\n')[0]}`, fix: 'check the indentation and quoting there (e.g. with yamllint)' }]);
  }
  const data: unknown = doc.toJS({ maxAliasCount: 50 });
  if (data === null || data === undefined) throw fault(file, [{ id: 'metadata', where: path, message: 'holds no keys', fix: 'write keys such as write_files: below #cloud-config, or remove #VM metadata=' }]);
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw fault(file, [{ id: 'metadata', where: path, message: 'is not a YAML mapping of cloud-config keys', fix: 'write keys such as write_files: at the top level' }]);
  }
  const problems: Problem[] = [];
  const out: UserCloudConfig = { file, files: [], packages: [] };
  for (const [k, v] of Object.entries(data as Record<string, unknown>)) {
    if (k === 'write_files') out.files = checkWriteFiles(v, path, account, config, problems);
    else if (k === 'packages') out.packages = checkPackages(v, path, problems);
    else if (k === 'timezone') {
      if (typeof v === 'string' && /^[A-Za-z0-9_+-]+(?:\/[A-Za-z0-9_+-]+){0,2}$/.test(v)) out.timezone = v;
      else problems.push({ id: 'metadata', where: `${path}: timezone`, message: `${quote(String(v), 40)} is not a time zone name`, fix: 'use a name such as Europe/Berlin' });
    } else {
      problems.push({
        id: 'metadata', where: `${path}: ${quote(k, 40)}`,
        message: `key ${quote(k, 40)} is not allowed${WHY[k] ? ` (${WHY[k]})` : ''}`,
        fix: `remove it; this site merges only ${Object.keys(ALLOWED_USER_KEYS).join(', ')}`,
      });
    }
  }
  if (problems.length > 0) throw fault(file, problems);
  return out;
}

function checkPackages(v: unknown, path: string, problems: Problem[]): string[] {
  if (!Array.isArray(v) || v.some((p) => typeof p !== 'string' || !/^[a-z0-9][a-z0-9.+_-]{0,127}$/.test(p))) {
    problems.push({ id: 'metadata', where: `${path}: packages`, message: 'must be a list of plain package names', fix: 'write e.g. packages: [htop, jq]' });
    return [];
  }
  return v as string[];
}

// cloud-init's names (cc_write_files.canonicalize_extraction) for what we
// pass on: plain text, base64, and gzip inside base64. Bare gz/gzip would be
// binary YAML (!!binary), which is not text we can check.
const ENCODINGS: Record<string, 'text' | UserFile['encoding']> = {
  'text/plain': 'text', b64: 'b64', base64: 'b64', 'gz+base64': 'gz+b64', 'gzip+base64': 'gz+b64', 'gz+b64': 'gz+b64', 'gzip+b64': 'gz+b64',
};

// Strict base64 (RFC 4648, with padding). Python's b64decode drops any other
// byte silently, so only text that decodes exactly as written is passed on.
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Content as base64, normalised; or why it is not usable. Line breaks and spaces between base64 groups are dropped. */
function base64Content(content: string, kind: 'text' | UserFile['encoding']): string | { why: string } {
  if (kind === 'text') return Buffer.from(content, 'utf8').toString('base64');
  const packed = content.replace(/[ \t\r\n]+/g, '');
  if (!BASE64.test(packed)) return { why: 'content is not base64 (A-Z a-z 0-9 + / and = padding only)' };
  return Buffer.from(packed, 'base64').toString('base64');
}

function checkWriteFiles(v: unknown, path: string, a: Account, config: Config, problems: Problem[]): UserFile[] {
  const at = (i: number) => `${path}: write_files[${i}]`;
  if (!Array.isArray(v)) {
    problems.push({ id: 'metadata', where: `${path}: write_files`, message: 'must be a list', fix: 'write each file as "- path: ... content: ..."' });
    return [];
  }
  const home = `/home/${a.user}/`;
  const out: UserFile[] = [];
  v.forEach((e, i) => {
    if (typeof e !== 'object' || e === null || Array.isArray(e)) {
      problems.push({ id: 'metadata', where: at(i), message: 'is not a mapping', fix: 'give path: and content:' });
      return;
    }
    const f = e as Record<string, unknown>;
    const extra = Object.keys(f).filter((k) => !['path', 'content', 'encoding', 'permissions', 'owner', 'append'].includes(k));
    if (extra.length > 0) problems.push({ id: 'metadata', where: at(i), message: `field ${quote(extra[0]!, 30)} is not allowed`, fix: 'use path, content, encoding, permissions, owner (yourself) and append' });
    const p = f.path;
    const ctl = typeof p === 'string' ? controlCharIn(p) : undefined;
    if (typeof p !== 'string' || ctl || p.split('/').some((s) => s === '..' || s === '.') || p.includes('//')) {
      problems.push({ id: 'metadata', where: at(i), message: `path ${quote(String(p), 60)} is not a plain absolute path${ctl ? ` (it contains ${ctl})` : ''}`, fix: `write files under ${home} or /workspace/` });
      return;
    }
    const inHome = p.startsWith(home);
    const inWs = p.startsWith('/workspace/');
    if (!inHome && !inWs) {
      problems.push({ id: 'metadata', where: at(i), message: `path ${quote(p, 60)} is outside your home and /workspace`, fix: `write files under ${home} or /workspace/` });
      return;
    }
    // The file is written as the user in the VM, but on NFS the user can put it there from the node anyway.
    if ((inHome && config.seed.nfs_home) || (inWs && config.seed.nfs_workspace)) {
      problems.push({ id: 'metadata', where: at(i), message: `${inHome ? 'your home' : '/workspace'} is mounted from NFS in the VMs`, fix: `put ${quote(p, 60)} there from the node instead; it is the same file system` });
      return;
    }
    if (f.owner !== undefined && f.owner !== `${a.user}:${a.group}` && f.owner !== a.user) {
      problems.push({ id: 'metadata', where: at(i), message: `owner ${quote(String(f.owner), 40)} is not you`, fix: `leave owner out; files are owned by ${a.user}:${a.group}` });
      return;
    }
    const perm = f.permissions === undefined ? '0644' : String(f.permissions);
    if (!/^0?[0-7]{3}$/.test(perm)) {
      problems.push({ id: 'metadata', where: at(i), message: `permissions ${quote(perm, 10)} are not an octal mode without set-id or sticky bits`, fix: "write e.g. permissions: '0640'" });
      return;
    }
    if (f.content !== undefined && typeof f.content !== 'string') {
      problems.push({ id: 'metadata', where: at(i), message: 'content is not text', fix: 'write content: | and the text below it' });
      return;
    }
    const kind = f.encoding === undefined ? 'text' : ENCODINGS[String(f.encoding)];
    if (kind === undefined) {
      problems.push({ id: 'metadata', where: at(i), message: `encoding ${quote(String(f.encoding), 20)} is not one this site passes on`, fix: 'use text/plain, b64 or gz+b64' });
      return;
    }
    const content = base64Content((f.content as string | undefined) ?? '', kind);
    if (typeof content !== 'string') {
      problems.push({ id: 'metadata', where: at(i), message: content.why, fix: `check the content, or write it as text without encoding: ${quote(String(f.encoding), 20)}` });
      return;
    }
    out.push({ path: p, content, encoding: kind === 'gz+b64' ? 'gz+b64' : 'b64', permissions: perm.padStart(4, '0'), append: f.append === true });
  });
  return out;
}
