// Finding 9a: cloud-init writes write_files as root, by path, following
// symlinks (util.write_file: os.makedirs, open(path, "wb"), chmod, chown),
// and deferred entries run in the final stage, when the user can already log
// in and plant ~/x -> /etc/passwd. So the user's allowlisted files must never
// be write_files entries at their own paths: they are staged root-only and
// copied into place by a fixed runcmd entry running as the user.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Mom, NOBODY } from '../harness/mom.js';

/** PyYAML, exactly as cloud-init loads user-data. */
function pyyaml(text: string): Record<string, unknown> {
  const out = execFileSync('/usr/bin/python3', ['-c', 'import yaml,sys,json; print(json.dumps(yaml.safe_load(sys.stdin.read())))'], { input: text, encoding: 'utf8' });
  return JSON.parse(out) as Record<string, unknown>;
}

type Entry = { path: string; content: string; encoding?: string; owner?: string; permissions?: string; defer?: boolean };

t.test('user write_files reach user-data only as root-only staging plus fixed runcmd entries, the user\'s values as separate argv items', async (t) => {
  const mom = new Mom({ ini: '[policy]\nuser_cloud_config = allowlist\n' });
  const plain = "it's $HOME `id` \"q\"\nline 2\n";
  const binary = gzipSync(Buffer.from('zipped\n')).toString('base64');
  const meta = [
    '#cloud-config',
    'write_files:',
    '  - path: /home/nobody/x',
    `    content: ${JSON.stringify(plain)}`,
    "  - path: /workspace/d/it's here; rm -rf ~",
    `    content: ${Buffer.from('b64 text').toString('base64')}`,
    '    encoding: base64',
    "    permissions: '0640'",
    '    append: true',
    '  - path: /home/nobody/z.gz',
    `    content: ${binary}`,
    '    encoding: gzip+base64',
    '',
  ].join('\n');
  writeFileSync(join(mom.workdir, 'meta.yaml'), meta);
  chownSync(join(mom.workdir, 'meta.yaml'), NOBODY.uid, NOBODY.gid);
  const r = await mom.prologue({ id: '90.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2,metadata=meta.yaml\necho\n' });
  t.equal(r.code, 0, r.er);
  const m = JSON.parse(readFileSync(join(mom.jobDir, '90.srv', 'manifest.json'), 'utf8')) as { vms: { seed: { path: string } }[] };
  const doc = pyyaml(execFileSync('isoinfo', ['-R', '-i', m.vms[0]!.seed.path, '-x', '/user-data'], { encoding: 'utf8' }));

  const files = doc.write_files as Entry[];
  const userPaths = files.filter((f) => f.path.startsWith('/home/') || f.path.startsWith('/workspace'));
  t.same(userPaths.map((f) => f.path), [], 'no write_files entry writes at a path under the user\'s home or /workspace');
  t.ok(files.every((f) => f.owner === 'root:root' && f.defer !== true), 'every write_files entry is root\'s and written before the user can log in');
  const { AGENT_PATH, AGENT_CONFIG_PATH, agentRuncmd } = await import('../../src/seed/agent.js');
  const { SSHD_DROPIN } = await import('../../src/seed/ssh-keys.js');
  const staged = files.filter((f) => !['/etc/profile.d/vtorque-job.sh', '/etc/vtorque/nodefile', AGENT_PATH, AGENT_CONFIG_PATH, SSHD_DROPIN].includes(f.path));
  t.same(staged.map((f) => [f.path, f.permissions, f.encoding]), [
    ['/var/lib/vtorque/user-files/0', '0600', 'b64'],
    ['/var/lib/vtorque/user-files/1', '0600', 'b64'],
    ['/var/lib/vtorque/user-files/2', '0600', 'gz+b64'],
  ], 'each user file staged root-only (0600) under /var/lib, as base64');
  t.equal(Buffer.from(staged[0]!.content, 'base64').toString('utf8'), plain, 'text content staged exactly');
  t.equal(Buffer.from(staged[1]!.content, 'base64').toString('utf8'), 'b64 text', 'base64 content staged exactly');
  t.equal(staged[2]!.content, binary, 'gzip+base64 content passed on as strict base64');

  const { PUT_AS_USER } = await import('../../src/seed/guest-files.js');
  t.same(doc.runcmd, [
    ['sh', '-c', PUT_AS_USER, 'sh', 'nobody', '/home/nobody/x', '/var/lib/vtorque/user-files/0', '0644', 'false'],
    ['sh', '-c', PUT_AS_USER, 'sh', 'nobody', "/workspace/d/it's here; rm -rf ~", '/var/lib/vtorque/user-files/1', '0640', 'true'],
    ['sh', '-c', PUT_AS_USER, 'sh', 'nobody', '/home/nobody/z.gz', '/var/lib/vtorque/user-files/2', '0644', 'false'],
    agentRuncmd(),
  ], 'runcmd holds exactly the fixed script once per file, the user\'s path as a positional argument, then the agent\'s start');
  t.notOk(PUT_AS_USER.includes('nobody') || PUT_AS_USER.includes('/home'), 'the script holds no value of the user\'s');
});

t.test('allowlisted write_files content that is not strict base64 is refused, not silently mangled by b64decode', async (t) => {
  const mom = new Mom({ ini: '[policy]\nuser_cloud_config = allowlist\n' });
  writeFileSync(join(mom.workdir, 'meta.yaml'), '#cloud-config\nwrite_files:\n  - path: /home/nobody/x\n    encoding: b64\n    content: "aGk=\\u2028cnVuY21k"\n');
  chownSync(join(mom.workdir, 'meta.yaml'), NOBODY.uid, NOBODY.gid);
  const r = await mom.prologue({ id: '91.srv', script: '#!/bin/sh\n#VM img=debian12.qcow2,metadata=meta.yaml\necho\n' });
  t.equal(r.code, 1, r.er);
  t.match(r.ou + r.er, /content is not base64/);
});

t.test("the premise: cloud-init's own write_files, as root, writes through a symlink the user planted", async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'vtorque-ci-'));
  chmodSync(work, 0o755);
  const secret = join(work, 'passwd');
  writeFileSync(secret, 'root\n', { mode: 0o644 });
  const home = join(work, 'home');
  mkdirSync(home, { mode: 0o755 });
  chownSync(home, NOBODY.uid, NOBODY.gid);
  t.equal(spawnSync('ln', ['-s', secret, join(home, 'x')], { uid: NOBODY.uid, gid: NOBODY.gid }).status, 0);
  // What write_files_deferred does with an entry the old user-data held for ~/x.
  const py = 'import sys\nfrom cloudinit.config import cc_write_files as w\nw.write_files("write_files", [{"path": sys.argv[1], "content": "pwned\\n", "owner": "nobody:nogroup", "permissions": "0644"}], "root:root")';
  const r = spawnSync('/usr/bin/python3', ['-c', py, join(home, 'x')], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.equal(readFileSync(secret, 'utf8'), 'pwned\n', 'the root-only file was overwritten');
  t.equal(statSync(secret).uid, NOBODY.uid, 'and handed to the user');
  execFileSync('rm', ['-rf', work]);
});

/** The fixed script, run on this host as root the way cloud-init's runcmd runs it. */
async function putAsUser(args: string[], staged: string): Promise<{ status: number | null; stderr: string }> {
  const { PUT_AS_USER } = await import('../../src/seed/guest-files.js');
  const r = spawnSync('sh', ['-c', PUT_AS_USER, 'sh', ...args.slice(0, 2), staged, ...args.slice(2)], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stderr: r.stderr };
}

t.test('the fixed script writes as the user: a symlink the user planted to a root-only file leaves that file untouched', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'vtorque-guest-'));
  chmodSync(work, 0o755);
  const secretDir = join(work, 'root-only');
  mkdirSync(secretDir, { mode: 0o755 });
  const secret = join(secretDir, 'passwd');
  writeFileSync(secret, 'root:x:0:0:root:/root:/bin/sh\n', { mode: 0o644 });
  const stagingDir = join(work, 'staging');
  mkdirSync(stagingDir, { mode: 0o700 });
  const home = join(work, 'home');
  mkdirSync(home, { mode: 0o755 });
  chownSync(home, NOBODY.uid, NOBODY.gid);
  const stage = (name: string, text: string) => {
    const p = join(stagingDir, name);
    writeFileSync(p, text, { mode: 0o600 });
    return p;
  };

  // The attacker's move: ~/x -> the root-only file, planted as the user.
  const plant = spawnSync('ln', ['-s', secret, join(home, 'x')], { uid: NOBODY.uid, gid: NOBODY.gid });
  t.equal(plant.status, 0, 'the user planted ~/x');
  const s1 = stage('0', 'nobody::0:0::/:/bin/sh\n');
  const r = await putAsUser(['nobody', join(home, 'x'), '0644', 'false'], s1);
  t.not(r.status, 0, 'the copy fails: the user cannot write there');
  t.match(r.stderr, /Permission denied/);
  t.equal(readFileSync(secret, 'utf8'), 'root:x:0:0:root:/root:/bin/sh\n', 'the root-only file is untouched');
  t.equal(statSync(secret).uid, 0, 'and still root\'s');
  t.equal(statSync(secret).mode & 0o777, 0o644, 'with its mode');
  t.notOk(existsSync(s1), 'the staged file is removed either way');

  // A directory symlink: ~/d -> the root-only directory.
  symlinkSync(secretDir, join(home, 'd'));
  const s2 = stage('1', 'x\n');
  const r2 = await putAsUser(['nobody', join(home, 'd', 'new'), '0644', 'false'], s2);
  t.not(r2.status, 0);
  t.notOk(existsSync(join(secretDir, 'new')), 'nothing is created in the root-only directory');

  // An ordinary file: made with the parents, as the user, with the mode asked for.
  const s3 = stage('2', 'hello\n');
  const r3 = await putAsUser(['nobody', join(home, 'a', 'b', 'f.txt'), '0640', 'false'], s3);
  t.equal(r3.status, 0, r3.stderr);
  const f = join(home, 'a', 'b', 'f.txt');
  t.equal(readFileSync(f, 'utf8'), 'hello\n');
  t.equal(statSync(f).uid, NOBODY.uid, 'owned by the user');
  t.equal(statSync(f).mode & 0o777, 0o640, 'mode as asked');
  t.equal(lstatSync(join(home, 'a')).uid, NOBODY.uid, 'parents are the user\'s too');
  const s4 = stage('3', 'more\n');
  t.equal((await putAsUser(['nobody', f, '0640', 'true'], s4)).status, 0);
  t.equal(readFileSync(f, 'utf8'), 'hello\nmore\n', 'append: true appends');

  // A path full of shell syntax is only ever an argument.
  const odd = join(home, "it's $(touch pwned) `id`; x");
  const s5 = stage('4', 'odd\n');
  t.equal((await putAsUser(['nobody', odd, '0644', 'false'], s5)).status, 0);
  t.equal(readFileSync(odd, 'utf8'), 'odd\n');
  t.notOk(existsSync(join(home, 'pwned')) || existsSync('pwned'), 'no command substitution ran');
  execFileSync('rm', ['-rf', work]);
});
