// From a SeedInput to the three NoCloud documents. All YAML is produced by
// the yaml package from data, in YAML 1.1 mode: cloud-init reads with PyYAML
// (YAML 1.1), where an unquoted no, on or 0644 would not be the string we meant.
import { controlCharIn, quote } from '../config/values.js';
import type { BatchTerms } from '../core/engine.js';
import { JobFault } from '../core/errors.js';
import { loadYaml } from '../tools/yaml.js';
import { checkAccountName, checkJobName, checkJobPath, gecosFor, guestHostname, instanceId } from './names.js';
import { networkConfig, segmentAddress } from './network.js';
import { buildOsvData } from './osv.js';
import { GUEST_NODEFILE, nodefileVars, profileText, profileVars } from './profile.js';
import { sshKeysOf } from './ssh-keys.js';
import { buildUserData } from './user-data.js';
import { userCloudConfig } from './user-metadata.js';
import { jobAccount, sharedOnce } from './account.js';
import { agentConfig } from './agent.js';
import type { RenderedSeed, SeedInput } from './index.js';

/**
 * The YAML path of every key and string in data whose text is not one safe
 * line (controlCharIn), with what it holds. Multi-line content goes in as
 * base64, so a line break of any kind in a string here can only be text that
 * escaped its check upstream.
 */
export function unsafeStrings(data: unknown, at = ''): { path: string; why: string }[] {
  if (typeof data === 'string') {
    const why = controlCharIn(data);
    return why ? [{ path: at || '(document)', why }] : [];
  }
  if (typeof data === 'number' || typeof data === 'boolean') return [];
  if (Array.isArray(data)) return data.flatMap((v, i) => unsafeStrings(v, `${at}[${i}]`));
  if (typeof data === 'object' && data !== null) {
    return Object.entries(data).flatMap(([k, v]) => {
      const path = /^[A-Za-z0-9_-]+$/.test(k) ? `${at}${at ? '.' : ''}${k}` : `${at}[${quote(k, 40)}]`;
      const why = controlCharIn(k);
      return [...(why ? [{ path: `${path} (the key)`, why }] : []), ...unsafeStrings(v, path)];
    });
  }
  // Only strings, numbers, booleans, lists and mappings are ever built; anything else is our bug.
  throw new TypeError(`cannot write ${typeof data} at ${at || '(document)'} as YAML`);
}

/**
 * The single YAML writer for every seed document. A value PyYAML would read
 * as more than one line is refused here whatever produced it: the backstop
 * behind each stage's own checks.
 */
export async function toYaml(data: unknown): Promise<string> {
  const bad = unsafeStrings(data);
  if (bad.length > 0) {
    throw new JobFault('a value cannot be written into the VM\'s cloud-init data', bad.slice(0, 5).map((b) => ({
      id: 'seed-yaml', where: b.path, message: `contains ${b.why}`,
      fix: 'remove that character from the name, path or file it comes from',
    })));
  }
  const { Document } = await loadYaml();
  const doc = new Document(data, { version: '1.1' });
  // lineWidth 0: never fold long values (keys, paths) across lines.
  return doc.toString({ lineWidth: 0, minContentWidth: 0 });
}

export async function renderDocuments(input: SeedInput & { nonce: string }): Promise<RenderedSeed> {
  const { config, job, vm } = input;
  const notes: string[] = [];
  checkAccountName('user', job.user);
  checkAccountName('group', job.group);
  const { terms } = input.batch;
  checkJobName(job.name, terms);
  if (job.workdir !== undefined) checkJobPath(terms.workdirVar, job.workdir);
  const hostname = guestHostname(input.node, vm.index, vm.count, terms);
  const iid = instanceId(job.id, vm.jobIndex, input.nonce);
  const metaData = await toYaml({ 'instance-id': iid, 'local-hostname': hostname });
  // Default: this node's VMs, which is the whole job when it has one node (check --render, tests).
  const vms = input.vmHostnames ?? Array.from({ length: vm.count }, (_, i) => guestHostname(input.node, i, vm.count, terms));
  const guest = input.batch.guestVars({ id: job.id, name: job.name, workdir: job.workdir, vms, vcpus: input.request.vcpus });
  const vars = profileVars({
    job: guest.vars, distro: input.request.distro ?? input.family, index: vm.index, count: vm.count, jobIndex: vm.jobIndex, hostname,
  });

  if (input.family === 'osv') {
    if (input.request.metadata !== undefined) {
      throw new JobFault('metadata= cannot be used with an OSv image', [{ id: 'metadata', where: `metadata=${input.request.metadata}`, message: "OSv's cloud-init reads its own dialect, not cloud-config", fix: 'remove #VM metadata=, or use a Debian or RedHat image' }]);
    }
    const userData = await toYaml(buildOsvData({ config, hostname, user: job.user, vars }));
    return { metaData, userData, networkConfig: undefined, instanceId: iid, hostname, notes };
  }

  const once = <T>(key: string, fn: () => Promise<T>): Promise<T> => sharedOnce(input.shared, key, fn);
  const account = await jobAccount(input.shared, config, job.user, job.group, input.signal);
  const g = gecosFor(account.gecos);
  if (g.note) notes.push(g.note);
  const keys = config.seed.ssh_keys_from.length > 0 ? await once(`keys\0${account.user}`, () => sshKeysOf(config, account, input.signal)) : { keys: [], notes: [] };
  notes.push(...keys.notes);
  const user = await once(`metadata\0${input.request.metadata}`, () => userCloudConfig({ config, file: input.request.metadata, workdir: job.workdir, account, signal: input.signal }));
  vars.push(...nodefileVars(guest.nodefile));
  const agent = agentConfig({ account, vars, guest, vms, vcpus: input.request.vcpus });
  const data = buildUserData({ config, family: input.family, hostname, account, gecos: g.gecos, sshKeys: keys.keys, profile: profileText(vars), user, agent });

  if (input.dryRun && config.seed.network === 'static') {
    notes.push(`network = static: ${config.seed.network_command || '[seed] network_command'} was not run; the address shown is a placeholder`);
  }
  const n = await networkConfig({
    config, jobId: job.id, node: input.node, jobIndex: vm.jobIndex, hostname, nonce: input.nonce, dryRun: input.dryRun, signal: input.signal, index: vm.index, count: vm.count,
  });
  (data.write_files as unknown[]).push(guestNodefile(vms));
  if (n.nic?.segment) (data.write_files as unknown[]).push(segmentHosts(input.node, vm.count, terms));
  const userData = `#cloud-config\n${await toYaml(data)}`;
  return { metaData, userData, networkConfig: await toYaml(n.doc), instanceId: iid, hostname, notes, network: n.nic };
}

/** The guest's node file (profile.ts GUEST_NODEFILE): the job's VM hostnames, which guestHostname made DNS labels. */
function guestNodefile(vms: readonly string[]): Record<string, unknown> {
  return {
    path: GUEST_NODEFILE, content: Buffer.from(vms.map((v) => `${v}\n`).join(''), 'utf8').toString('base64'), encoding: 'b64',
    owner: 'root:root', permissions: '0644',
  };
}

/**
 * This node's VMs of the job by their segment addresses, appended to
 * /etc/hosts. Deferred to cloud-init's final stage: manage_etc_hosts rewrites
 * /etc/hosts from its template in the init stage, which would drop them; the
 * final stage still runs before runcmd starts the agent, so they are there
 * before the job script.
 */
function segmentHosts(node: string, count: number, terms: BatchTerms): Record<string, unknown> {
  const lines = Array.from({ length: count }, (_, i) => `${segmentAddress(i)} ${guestHostname(node, i, count, terms)}\n`).join('');
  return {
    path: '/etc/hosts', content: Buffer.from(`# this job's VMs on its private segment (vtorque)\n${lines}`, 'utf8').toString('base64'), encoding: 'b64',
    owner: 'root:root', permissions: '0644', append: true, defer: true,
  };
}

