// vsub: vTorque's submit command, here a front end to qsub (issue 14, item 9).
// The qsub it runs is a test double on a private PATH that records its argv,
// its stdin and its working directory; vsub runs as the submitting user
// (nobody), as a user types it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NOBODY, REPO } from './harness/mom.js';

const VSUB = join(REPO, 'bin/vsub');
const root = mkdtempSync(join(tmpdir(), 'vt-vsub-'));
chmodSync(root, 0o755);

interface Submitted {
  code: number | null;
  out: string;
  err: string;
  /** What the fake qsub saw; undefined when vsub did not run it. */
  qsub?: { argv: string[]; stdin: Buffer; cwd: string };
}

/** A directory holding a fake qsub that records what it gets and prints a job id. */
function fakeQsub(exitCode = 0): { dir: string; record: string } {
  const dir = mkdtempSync(join(root, 'bin-'));
  const record = mkdtempSync(join(root, 'rec-'));
  chmodSync(dir, 0o755);
  chmodSync(record, 0o777);
  writeFileSync(join(dir, 'qsub'), `#!/bin/sh
for a in "$@"; do printf '%s\\0' "$a"; done > ${record}/argv
cat > ${record}/stdin
pwd > ${record}/cwd
echo 42.server
exit ${exitCode}
`, { mode: 0o755 });
  return { dir, record };
}

/** A submit directory of the user's, with their job script in it. */
function submitDir(files: Record<string, string>): string {
  const d = mkdtempSync(join(root, 'work-'));
  chmodSync(d, 0o755);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text, { mode: 0o644 });
  return d;
}

function vsub(args: string[], o: { cwd: string; stdin?: string; path?: string; exitCode?: number }): Submitted {
  const q = fakeQsub(o.exitCode);
  const r = spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, VSUB, ...args], {
    input: o.stdin ?? '',
    cwd: o.cwd,
    uid: NOBODY.uid, gid: NOBODY.gid,
    env: { PATH: o.path ?? `${q.dir}:/usr/bin:/bin`, LANG: 'C.UTF-8', HOME: '/nonexistent' },
  });
  const res: Submitted = { code: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
  if (existsSync(join(q.record, 'argv'))) {
    res.qsub = {
      argv: readFileSync(join(q.record, 'argv'), 'latin1').split('\0').slice(0, -1),
      stdin: readFileSync(join(q.record, 'stdin')),
      cwd: readFileSync(join(q.record, 'cwd'), 'utf8').trim(),
    };
  }
  return res;
}

const SCRIPT = '#!/bin/bash\n#PBS -l nodes=1\n# my job\necho hi\n';

t.test('without a VM request vsub is qsub: the same argv, stdin, working directory and exit code', async (t) => {
  const cwd = submitDir({ 'run.pbs': SCRIPT });
  const r = vsub(['-l', 'nodes=2', '-q', 'batch', 'run.pbs'], { cwd });
  t.equal(r.code, 0, r.err);
  t.same(r.qsub?.argv, ['-l', 'nodes=2', '-q', 'batch', 'run.pbs']);
  t.equal(r.qsub?.cwd, cwd, 'PBS_O_WORKDIR is qsub\'s working directory');
  t.equal(r.out, '42.server\n', 'the job id reaches the user');
  t.equal(r.err, '');
  const piped = vsub(['-N', 'x'], { cwd, stdin: 'echo from stdin\n' });
  t.same(piped.qsub?.argv, ['-N', 'x']);
  t.equal(piped.qsub?.stdin.toString(), 'echo from stdin\n', 'a piped script is qsub\'s to read');
  t.equal(vsub(['run.pbs'], { cwd, exitCode: 3 }).code, 3, 'qsub\'s exit code is vsub\'s');
});

t.test('-vm becomes #VM lines after the shebang; the script reaches qsub otherwise byte for byte, under its own name', async (t) => {
  const cwd = submitDir({ 'run.pbs': SCRIPT });
  const r = vsub(['-l', 'nodes=1', '-vm', 'img=debian12.qcow2,vcpus=4', 'run.pbs', '-vm', 'ram=8G'], { cwd });
  t.equal(r.code, 0, r.err);
  t.same(r.qsub?.argv, ['-N', 'run.pbs', '-l', 'nodes=1'], 'the script comes on stdin, named as qsub names a script file');
  t.equal(r.qsub?.stdin.toString(), '#!/bin/bash\n#VM img=debian12.qcow2,vcpus=4\n#VM ram=8G\n#PBS -l nodes=1\n# my job\necho hi\n');
  const noShebang = submitDir({ 'job.sh': 'echo hi\n' });
  t.equal(vsub(['-vm', 'vcpus=2', 'job.sh'], { cwd: noShebang }).qsub?.stdin.toString(), '#VM vcpus=2\necho hi\n');
});

t.test('a job name from the command line or the script is kept: vsub adds none', async (t) => {
  const cwd = submitDir({ 'named.pbs': '#!/bin/sh\n#PBS -N mine\necho\n', 'run.pbs': SCRIPT });
  t.same(vsub(['-vm', 'vcpus=2', 'named.pbs'], { cwd }).qsub?.argv, []);
  t.same(vsub(['-N', 'other', '-vm', 'vcpus=2', 'run.pbs'], { cwd }).qsub?.argv, ['-N', 'other']);
  const piped = vsub(['-vm', 'vcpus=2'], { cwd, stdin: '#!/bin/sh\necho\n' });
  t.same(piped.qsub?.argv, [], 'a piped script stays STDIN, as qsub names it');
  t.equal(piped.qsub?.stdin.toString(), '#!/bin/sh\n#VM vcpus=2\necho\n');
});

t.test('a script\'s #PBS -vm lines become #VM lines, so qsub accepts it with or without the submit filter', async (t) => {
  const cwd = submitDir({ 'vt.pbs': '#!/bin/bash\n#PBS -l nodes=1\n#PBS -vm img=debian12.qcow2,vcpus=2\necho\n' });
  const r = vsub(['vt.pbs'], { cwd });
  t.equal(r.code, 0, r.err);
  t.same(r.qsub?.argv, ['-N', 'vt.pbs']);
  t.equal(r.qsub?.stdin.toString(), '#!/bin/bash\n#PBS -l nodes=1\n#VM img=debian12.qcow2,vcpus=2\necho\n');
  t.match(r.err, /line 3: '#PBS -vm' is vTorque's form of '#VM'/);
});

t.test('what vsub cannot do here is refused before qsub runs, saying why and how to fix it', async (t) => {
  const cwd = submitDir({ 'run.pbs': SCRIPT, 'dup.pbs': '#!/bin/sh\n#VM vcpus=2\necho\n' });
  const cases: [string[], RegExp][] = [
    [['-gf', '-vm', 'vcpus=2', 'run.pbs'], /-gf.*Fix: /],
    [['-listImages'], /-listImages.*Fix: /],
    [['-vmimg=debian12.qcow2', 'run.pbs'], /-vmimg=debian12\.qcow2.*Fix: .*-vm img=/],
    [['run.pbs', '-vm'], /-vm needs a value\n.*nothing follows -vm\. Fix: /],
    [['-I', '-vm', 'vcpus=2'], /interactive.*Fix: /],
    [['-vm', 'vcpu=2', 'run.pbs'], /unknown key "vcpu".*did you mean vcpus/],
    [['-vm', 'vcpus', 'run.pbs'], /vsub -vm: "vcpus" has no '='/],
    [['-vm', 'vcpus=2', 'dup.pbs'], /vcpus is given by vsub -vm and on line 2 of dup\.pbs.*Fix: /],
    [['-vm', 'vcpus=2', 'run.pbs', 'extra'], /"extra".*Fix: .*-F/],
    [['-vm', 'vcpus=2', 'missing.pbs'], /missing\.pbs.*cannot be read.*Fix: /],
  ];
  for (const [args, re] of cases) {
    const r = vsub(args, { cwd });
    t.equal(r.code, 1, args.join(' '));
    t.equal(r.qsub, undefined, `${args.join(' ')}: qsub was not run`);
    t.match(r.err, /^vtorque: /, args.join(' '));
    t.match(r.err, re, args.join(' '));
  }
});

t.test('a -vm value with a line break or other control character cannot add a line to the script', async (t) => {
  const cwd = submitDir({ 'run.pbs': SCRIPT });
  for (const v of ['vcpus=2\nrm -rf ~', 'vcpus=2\recho x', 'img=a.qcow2\u2028#VM ram=1G', 'vcpus=2\u0085x']) {
    // The name escaped: a raw U+2028 would break tap's own output lines.
    const name = JSON.stringify(v).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
    const r = vsub(['-vm', v, 'run.pbs'], { cwd });
    t.equal(r.code, 1, name);
    t.equal(r.qsub, undefined, `${name}: qsub was not run`);
    t.match(r.err, /^vtorque:   vsub -vm: .*contains .*Fix: /m, name);
  }
});

t.test('qsub is found on the user\'s PATH, never vsub itself, else next to [tools] qstat; none is a clear refusal', async (t) => {
  const cwd = submitDir({ 'run.pbs': SCRIPT });
  const q = fakeQsub();
  const self = mkdtempSync(join(root, 'self-'));
  chmodSync(self, 0o755);
  symlinkSync(VSUB, join(self, 'qsub'));
  // A site that named its wrapper qsub: vsub must not run itself in a loop.
  const r = vsub(['run.pbs'], { cwd, path: `${self}:${q.dir}:/usr/bin:/bin` });
  t.equal(r.code, 0, r.err);
  t.same(readFileSync(join(q.record, 'argv'), 'latin1').split('\0').slice(0, -1), ['run.pbs']);

  const etc = mkdtempSync(join(root, 'etc-'));
  chmodSync(etc, 0o755);
  const empty = join(etc, 'empty.ini');
  writeFileSync(empty, '', { mode: 0o644 });
  const none = spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, VSUB, '--config', empty, 'run.pbs'], {
    cwd, uid: NOBODY.uid, gid: NOBODY.gid, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
  });
  t.equal(none.status, 1);
  t.match(none.stderr.toString(), /^vtorque: vsub: job not submitted: qsub is not on your PATH\n.*Fix: add Torque's bin directory to PATH/);

  const tools = fakeQsub();
  const ini = join(etc, 'prologue.ini');
  writeFileSync(ini, `[tools]\nqstat = ${tools.dir}/qstat\n`, { mode: 0o644 });
  const viaIni = spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, VSUB, '--config', ini, 'run.pbs'], {
    cwd, uid: NOBODY.uid, gid: NOBODY.gid, env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8' },
  });
  t.equal(viaIni.status, 0, viaIni.stderr.toString());
  t.same(readFileSync(join(tools.record, 'argv'), 'latin1').split('\0').slice(0, -1), ['run.pbs']);
});

t.test('vsub --help lists every vsub option and what it does here', async (t) => {
  const r = spawnSync(process.execPath, [VSUB, '--help'], { env: { PATH: '/usr/bin:/bin' } });
  t.equal(r.status, 0);
  const text = r.stdout.toString();
  for (const w of ['-vm', '-gf', '-listImages', '#PBS -vm', '#VM', 'qsub']) t.match(text, w);
});
