// Finding 2: PyYAML, which cloud-init loads user-data with, reads U+2028,
// U+2029 and U+0085 as line breaks. A submit directory, a job name or an
// allowlisted write_files entry holding one must never add a key of the
// user's to user-data (runcmd runs as root in the VM; disable_root: false
// opens root logins). Driven through the real prologue (harness Mom), the
// seed ISO read back with isoinfo and parsed with PyYAML as cloud-init does.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY } from '../harness/mom.js';
import { GUEST_NODEFILE, profileText, profileVars, nodefileVars } from '../../src/seed/profile.js';
import { SSHD_DROPIN } from '../../src/seed/ssh-keys.js';
import { torqueGuestVars } from '../../src/torque/engine.js';
import { AGENT_CONFIG_PATH, AGENT_PATH } from '../../src/seed/agent.js';

const SEPARATORS = [['U+2028', '\u2028'], ['U+2029', '\u2029'], ['U+0085', '\u0085']] as const;
/**
 * What each hostile value tries to add to user-data, after line breaks PyYAML
 * sees and the yaml package does not: two keys of the user's, then a block
 * scalar (explicit indentation 2, the profile's closing quote in a comment)
 * that swallows the rest of write_files, so the document stays valid.
 */
const PAYLOAD = (sep: string) => `x${sep}runcmd: [[touch, pwned]]${sep}disable_root: false${sep}zz: |2 #`;
const OUR_KEYS = ['hostname', 'preserve_hostname', 'manage_etc_hosts', 'disable_root', 'ssh_pwauth', 'no_ssh_fingerprints', 'bootcmd', 'users', 'write_files', 'runcmd'];
/** Our own write_files entries: the profile, the guest agent with its config, the node file and the sshd drop-in. */
const OUR_FILES = ['/etc/profile.d/vtorque-job.sh', AGENT_PATH, AGENT_CONFIG_PATH, GUEST_NODEFILE, SSHD_DROPIN];
const SCRIPT = '#!/bin/sh\n#VM img=debian12.qcow2\necho\n';

/** PyYAML, exactly as cloud-init loads user-data. */
function pyyaml(text: string): Record<string, unknown> {
  const out = execFileSync('/usr/bin/python3', ['-c', 'import yaml,sys,json; print(json.dumps(yaml.safe_load(sys.stdin.read())))'], { input: text, encoding: 'utf8' });
  return JSON.parse(out) as Record<string, unknown>;
}

/** user-data of every seed the prologue made for the job. */
function seedsOf(mom: Mom, id: string): string[] {
  const manifest = join(mom.jobDir, id, 'manifest.json');
  if (!existsSync(manifest)) return [];
  const m = JSON.parse(readFileSync(manifest, 'utf8')) as { vms: { seed: { path: string } }[] };
  return m.vms.map((v) => execFileSync('isoinfo', ['-R', '-i', v.seed.path, '-x', '/user-data'], { encoding: 'utf8' }));
}

type Entry = { path: string; content?: string; encoding?: string; owner?: string; permissions?: string };

/** The profile as the guest will have it: the write_files entry decoded as cloud-init decodes b64. */
function profileOf(doc: Record<string, unknown>): string | undefined {
  const e = (doc.write_files as Entry[] | undefined)?.find((f) => f.path === '/etc/profile.d/vtorque-job.sh');
  if (!e || e.encoding !== 'b64' || typeof e.content !== 'string') return undefined;
  return Buffer.from(e.content, 'base64').toString('utf8');
}

function refusedWithoutSeed(t: Tap, mom: Mom, id: string, r: { code: number | null; ou: string; er: string }, message: RegExp): void {
  for (const ud of seedsOf(mom, id)) {
    const doc = pyyaml(ud);
    t.same(Object.keys(doc).filter((k) => !OUR_KEYS.includes(k)), [], `no key of the user's reached user-data: ${Object.keys(doc).join(', ')}`);
    t.equal(doc.disable_root, true, 'root logins stay disabled');
  }
  t.equal(r.code, 1, `a job fault (exit 1), not a node fault: ${r.er}`);
  t.match(r.ou + r.er, message, 'the job output names the character');
  t.notOk(r.ou.includes('\u2028') || r.ou.includes('\u2029') || r.er.includes('\u2028') || r.er.includes('\u2029'), 'no raw line separator in the job output');
  t.notOk(existsSync(join(mom.jobDir, id)), 'no seed was made');
}

type Tap = Pick<typeof t, "same" | "equal" | "match" | "notOk">;
/** "<what> ...: contains a line separator (U+2028)": the value and the character, on one line. */
const says = (what: string, code: string) => new RegExp(`${what}[^\\n]*contains [^\\n]*\\(${code.replace('+', '\\+')}\\)`);

t.test('a line separator in PBS_O_WORKDIR cannot add a runcmd to user-data', async (t) => {
  const mom = new Mom();
  for (const [name, sep] of SEPARATORS) {
    await t.test(name, async (t) => {
      const dir = join(mom.workdir, PAYLOAD(sep));
      mkdirSync(dir);
      chownSync(dir, NOBODY.uid, NOBODY.gid);
      const id = `${20 + SEPARATORS.findIndex(([n]) => n === name)}.srv`;
      const r = await mom.prologue({ id, script: SCRIPT }, { env: { PBS_O_WORKDIR: dir } });
      refusedWithoutSeed(t, mom, id, r, says('PBS_O_WORKDIR', name));
    });
  }
});

t.test('a line separator in the job name cannot add a runcmd to user-data', async (t) => {
  const mom = new Mom();
  for (const [name, sep] of SEPARATORS) {
    await t.test(name, async (t) => {
      const id = `${30 + SEPARATORS.findIndex(([n]) => n === name)}.srv`;
      const r = await mom.prologue({ id, name: PAYLOAD(sep), script: SCRIPT });
      refusedWithoutSeed(t, mom, id, r, says('job name', name));
    });
  }
});

t.test('a workdir with quotes, $ and non-ASCII reaches the guest profile exactly, as base64', async (t) => {
  const mom = new Mom();
  const dir = join(mom.workdir, `it's "$HOME" #1 ü`);
  mkdirSync(dir);
  chownSync(dir, NOBODY.uid, NOBODY.gid);
  const r = await mom.prologue({ id: '40.srv', name: `name 'q' $(id)`, script: SCRIPT }, { env: { PBS_O_WORKDIR: dir } });
  t.equal(r.code, 0, r.er);
  const [ud] = seedsOf(mom, '40.srv');
  const doc = pyyaml(ud!);
  t.same(Object.keys(doc), OUR_KEYS, 'exactly our top-level keys');
  const guest = torqueGuestVars({ id: '40.srv', name: `name 'q' $(id)`, workdir: dir, vms: ['vnode01'], vcpus: 1 });
  const meant = profileText([...profileVars({
    job: guest.vars,
    distro: 'debian', index: 0, count: 1, jobIndex: 0, hostname: 'vnode01',
  }), ...nodefileVars(guest.nodefile)]);
  t.equal(profileOf(doc), meant, 'the profile, decoded from b64, is byte for byte what we meant');
  const agent = (doc.write_files as Entry[]).find((f) => f.path === AGENT_CONFIG_PATH);
  t.equal(agent?.encoding, 'b64', 'the agent config is base64 too');
  const env = (JSON.parse(Buffer.from(agent!.content!, 'base64').toString('utf8')) as { env: Record<string, string> }).env;
  t.same([env.PBS_O_WORKDIR, env.PBS_JOBNAME], [dir, `name 'q' $(id)`], 'and carries the workdir and job name exactly, for the agent to set');
});

t.test('line separators in allowlisted write_files content stay content; in a path they are refused', async (t) => {
  const mom = new Mom({ ini: '[policy]\nuser_cloud_config = allowlist\n' });
  for (const [name, sep] of SEPARATORS) {
    await t.test(`${name} in content`, async (t) => {
      const id = `${50 + SEPARATORS.findIndex(([n]) => n === name)}.srv`;
      const content = `line one ${PAYLOAD(sep)}\nline two\n`;
      // JSON is YAML: the user's file carries the separator as an escape, the yaml package hands it over raw.
      const meta = `#cloud-config\n${JSON.stringify({ write_files: [{ path: '/workspace/notes.txt', content }] })}\n`;
      const file = `meta-${id}.yaml`;
      writeFileSync(join(mom.workdir, file), meta);
      chownSync(join(mom.workdir, file), NOBODY.uid, NOBODY.gid);
      const r = await mom.prologue({ id, script: `#!/bin/sh\n#VM img=debian12.qcow2,metadata=${file}\necho\n` });
      t.equal(r.code, 0, r.er);
      const uds = seedsOf(mom, id);
      t.equal(uds.length, 1, 'one seed');
      const doc = pyyaml(uds[0]!);
      t.same(Object.keys(doc).filter((k) => !OUR_KEYS.includes(k)), [], `no key of the user's: ${Object.keys(doc).join(', ')}`);
      t.equal(doc.disable_root, true, 'root logins stay disabled');
      for (const c of (doc.runcmd as unknown[] | undefined) ?? []) t.notMatch(JSON.stringify(c), /pwned/, 'runcmd holds none of the user\'s text as a command');
      const entries = (doc.write_files as Entry[]).filter((f) => !OUR_FILES.includes(f.path));
      t.equal(entries.length, 1, 'the one user file');
      t.equal(entries[0]!.encoding, 'b64', 'user content is emitted as base64');
      t.equal(Buffer.from(entries[0]!.content!, 'base64').toString('utf8'), content, 'and decodes to exactly what the user wrote');
    });
    await t.test(`${name} in path`, async (t) => {
      const id = `${60 + SEPARATORS.findIndex(([n]) => n === name)}.srv`;
      const meta = `#cloud-config\n${JSON.stringify({ write_files: [{ path: `/workspace/${PAYLOAD(sep)}`, content: 'x' }] })}\n`;
      const file = `meta-${id}.yaml`;
      writeFileSync(join(mom.workdir, file), meta);
      chownSync(join(mom.workdir, file), NOBODY.uid, NOBODY.gid);
      const r = await mom.prologue({ id, script: `#!/bin/sh\n#VM img=debian12.qcow2,metadata=${file}\necho\n` });
      refusedWithoutSeed(t, mom, id, r, /is not a plain absolute path/);
    });
  }
});
