// The hostile corpus: each row is a job script (or argv, or config) that a
// careless or malicious user or a broken node could hand the prologue, with
// the exit code and message fragment pbs_mom and the user must see.
import t from 'tap';
import { mkfifoSync } from './harness/fifo.js';
import { mkdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, type Job, type RunOptions } from './harness/mom.js';

export interface Case {
  name: string;
  script?: string | Buffer;
  /** Runs after submit: replace the .SC with something odd. */
  setup?: (mom: Mom, job: Job) => void;
  argv?: (mom: Mom, job: Job) => string[];
  ini?: string;
  iniText?: string;
  oldTorque?: boolean;
  code: 0 | 1 | 2;
  /** Expected in the job's .OU + .ER. */
  says: RegExp;
}

const VM = '#!/bin/bash\n#PBS -l nodes=1\n';
// Not a VM job: the job sees nothing of us (pbs_mom appends a prologue's output to its .o).
const SILENT = /^$/;
const ELF = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(64, 0), Buffer.from('\n#VM img=x\n')]);

export const CASES: Case[] = [
  { name: 'no job script (interactive job)', code: 0, says: SILENT },
  { name: 'job script is a directory', setup: (m, j) => mkdirSync(m.scriptPath(j)), code: 1, says: /is not a regular file/ },
  { name: 'job script is a FIFO (must not hang)', setup: (m, j) => mkfifoSync(m.scriptPath(j)), code: 1, says: /is not a regular file/ },
  { name: 'job script is a symlink to /etc/shadow', setup: (m, j) => symlinkSync('/etc/shadow', m.scriptPath(j)), code: 1, says: /is a symbolic link/ },
  { name: 'job script path cannot be opened', argv: (_m, j) => [j.id, 'nobody', 'nogroup', 'job', 'walltime=1', 'batch', '', '/etc/passwd/x.SC'], code: 2, says: /cannot be opened: ENOTDIR/ },
  { name: 'binary script', script: ELF, code: 0, says: SILENT },
  { name: 'binary bytes in a #VM value', script: Buffer.from('#VM img=a\u0000b\n'), code: 1, says: /img value contains a NUL byte/ },
  { name: 'non-UTF-8 bytes in a value', script: Buffer.concat([Buffer.from('#VM img=a'), Buffer.from([0xff, 0xfe]), Buffer.from('\n')]), code: 1, says: /characters outside/ },
  { name: '1 GiB script with #VM at the top', setup: (m, j) => { writeFileSync(m.scriptPath(j), `${VM}#VM vcpus=2\n`); truncateSync(m.scriptPath(j), 1024 ** 3); }, code: 0, says: /VM job .*2 vCPUs/ },
  { name: '1 GiB script without #VM', setup: (m, j) => { writeFileSync(m.scriptPath(j), '#!/bin/sh\necho\n'); truncateSync(m.scriptPath(j), 1024 ** 3); }, code: 0, says: SILENT },
  { name: 'CRLF line endings', script: '#!/bin/sh\r\n#VM vcpus=2\r\necho\r\n', code: 0, says: /CRLF.*dos2unix/ },
  { name: '#VM after the first command', script: '#!/bin/sh\necho hi\n#VM img=x\n', code: 0, says: SILENT },
  { name: 'img with ..', script: `${VM}#VM img=../../etc/shadow\n`, code: 1, says: /line 3: img: image name "..\/..\/etc\/shadow" contains '\.\.'/ },
  { name: 'img as an absolute path', script: `${VM}#VM img=/etc/shadow\n`, code: 1, says: /is an absolute path/ },
  { name: 'img with a command substitution', script: `${VM}#VM img=$(reboot)\n`, code: 1, says: /characters outside A-Z/ },
  { name: 'img with ; and spaces', script: `${VM}#VM img=a;rm -rf /\n`, code: 1, says: /characters outside A-Z/ },
  { name: 'img with a backtick', script: `${VM}#VM img=\`id\`\n`, code: 1, says: /characters outside A-Z/ },
  { name: 'img starting with -', script: `${VM}#VM img=-rf\n`, code: 1, says: /starts with '-'/ },
  { name: 'carriage return inside a value', script: `${VM}#VM img=a\rb.qcow2\n`, code: 1, says: /control character \(\\x0d\)/ },
  { name: 'escape sequence inside a value', script: `${VM}#VM img=\u001b[2Jx\n`, code: 1, says: /control character \(\\x1b\)/ },
  { name: 'huge number', script: `${VM}#VM vcpus=99999999999999999999\n`, code: 1, says: /is not a whole number/ },
  { name: 'negative count', script: `${VM}#VM vcpus=-1\n`, code: 1, says: /"-1" is not a whole number/ },
  { name: 'zero vcpus', script: `${VM}#VM vcpus=0\n`, code: 1, says: /0 is out of range/ },
  { name: 'zero vms_per_node', script: `${VM}#VM vms_per_node=0\n`, code: 1, says: /vms_per_node: 0 is out of range/ },
  { name: 'ram=12X', script: `${VM}#VM ram=12X\n`, code: 1, says: /ram: "12X" is not a size/ },
  { name: 'ram too large for the site', script: `${VM}#VM ram=999G\n`, code: 1, says: /ram=999G is more than this site allows \(256G\)/ },
  { name: 'unknown key with a suggestion', script: `${VM}#VM vpcus=4\n`, code: 1, says: /unknown key "vpcus".*did you mean vcpus\?/ },
  { name: 'look-alike key (Cyrillic i)', script: `${VM}#VM \u0456mg=a\n`, code: 1, says: /unknown key/ },
  { name: 'duplicate key', script: `${VM}#VM img=a\n#VM img=b\n`, code: 1, says: /img is given twice \(first on line 3\)/ },
  { name: 'empty #VM line', script: `${VM}#VM\n`, code: 1, says: /#VM has nothing after it/ },
  { name: 'item without =', script: `${VM}#VM vcpus\n`, code: 1, says: /"vcpus" has no '='/ },
  { name: 'unknown distro', script: `${VM}#VM distro=windows\n`, code: 1, says: /distro: "windows" is not allowed.*one of debian/ },
  { name: 'unknown fs_type', script: `${VM}#VM fs_type=nfs\n`, code: 1, says: /fs_type: "nfs" is not allowed/ },
  { name: 'disk naming a host device', script: `${VM}#VM disk=/dev/sda\n`, code: 1, says: /line 3: disk= is not supported yet on this site/ },
  // vm_prologue=../../../../etc/shadow passes here: root never opens it, the job starter reads it as the user (test/security/manifest-user-paths).
  { name: 'vm_prologue with shell characters', script: `${VM}#VM vm_prologue=x.sh;reboot\n`, code: 1, says: /line 3: vm_prologue: vm_prologue "x\.sh;reboot" has characters outside/ },
  { name: 'metadata path with shell characters', script: `${VM}#VM metadata=~/x;ls\n`, code: 1, says: /metadata "~\/x;ls" has characters outside/ },
  { name: '10,000 #VM lines', script: VM + '#VM img=a\n'.repeat(10000), code: 1, says: /\.\.\. and [0-9]+ more/ },
  { name: 'a 60 KB #VM line', script: `${VM}#VM img=${'a'.repeat(60000)}\n`, code: 1, says: /longer than 255 characters/ },
  { name: 'missing config file', setup: (m, j) => writeFileSync(m.scriptPath(j), `${VM}#VM vcpus=1\n`), code: 2, says: /nope\.ini: does not exist/ },
  { name: 'ini with a wrong type', ini: '[policy]\nmax_vcpus = many\n', script: `${VM}#VM vcpus=1\n`, code: 2, says: /\[policy\] max_vcpus: "many" is not a whole number/ },
  { name: 'ini with a relative pool path', ini: '[paths]\nimage_pool = images\n', script: `${VM}#VM vcpus=1\n`, code: 2, says: /image_pool: "images" is not an absolute path/ },
  { name: 'ini with a key but no value', iniText: '[paths]\njob_dir\n', script: `${VM}#VM vcpus=1\n`, code: 2, says: /line 2: "job_dir" is not '\[section\]', 'key = value' or a comment/ },
  { name: 'ini that is binary garbage', iniText: '\u0000\u0001\u0002[[[=\n', script: `${VM}#VM vcpus=1\n`, code: 2, says: /line 1: contains a NUL byte/ },
  { name: 'ini with an unclosed section', iniText: '[paths\njob_dir = /x\n', script: `${VM}#VM vcpus=1\n`, code: 2, says: /line 1: "\[paths" is not/ },
  { name: 'argv too short', argv: (_m, j) => [j.id, 'nobody', 'nogroup'], code: 2, says: /3 arguments; expected 7 or 8/ },
  { name: 'argv too long', argv: (m, j) => [...m.argvFor('prologue', j, {}), 'extra'], code: 2, says: /9 arguments; expected 7 or 8/ },
  { name: 'job id with a path', argv: (m, j) => ['../../etc', ...m.argvFor('prologue', j, {}).slice(1)], code: 2, says: /not a Torque job id/ },
  { name: 'user name with shell characters', argv: (m, j) => { const a = m.argvFor('prologue', j, {}); a[1] = 'x;id'; return a; }, code: 2, says: /not a user name/ },
];

// test/submit-filter.test.ts borrows CASES and sets this flag first, so that importing the table does not run the corpus against the prologue.
if (!(globalThis as { vtorqueCasesOnly?: boolean }).vtorqueCasesOnly) t.test('every hostile input gets its exit code and a clear message', async (t) => {
  t.ok(CASES.length >= 30, `${CASES.length} cases`);
  let n = 0;
  for (const c of CASES) {
    n++;
    await t.test(c.name, async (t) => {
      const mom = new Mom({ ini: c.ini, iniText: c.iniText });
      if (c.name === 'missing config file') {
        (mom as { configFile: string }).configFile = join(mom.root, 'nope.ini');
        for (const k of ['prologue']) mom.installWrapper(k);
      }
      const job: Job = { id: `${n}.srv`, name: 'hostile', script: c.script };
      if (c.setup) {
        mom.submit({ ...job, script: undefined });
        c.setup(mom, job);
      } else mom.submit(job);
      const opts: RunOptions = { argv: c.argv?.(mom, job), alarm: 60 };
      const r = await mom.run('prologue', job, opts);
      t.equal(r.code, c.code, `exit code (output: ${(r.ou + r.er).slice(0, 400)})`);
      t.match(r.ou + r.er, c.says);
      t.notOk(r.killedByAlarm, 'finished before $prologalarm');
      for (const l of (r.ou + r.er).split('\n').filter((x) => x !== '')) {
        t.match(l, /^vtorque: /, 'every line the user sees is ours and one line long');
      }
    });
  }
});
