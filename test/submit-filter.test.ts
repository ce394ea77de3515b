// The submit filter through its real contract, as qsub drives it: the job
// script on stdin, qsub's arguments as argv, run as the submitting user (here
// nobody), the (possibly changed) script read back from stdout, and the exit
// code deciding whether the job is submitted.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, NOBODY } from './harness/mom.js';
import { withoutSiteConfig } from './harness/no-site-config.js';
import { parseConfig } from '../src/config/load.js';
import { scanDirectives } from '../src/request/directives.js';
import { resolveScanned } from '../src/request/resolve.js';
import { REQUEST_VARIABLE, requestFromEncoded } from '../src/request/encoding.js';
import { parseQstat } from '../src/torque/qstat.js';
import { CHECKER_VERSION, failedRules, policyHash } from '../src/image/verdicts.js';
import { evaluateRules } from '../src/image/rules.js';
import { problemLine } from '../src/report/user.js';
import { nodeCount } from '../src/submit/vm.js';
import { parseQsubArgs, qsubHeader, splitDirective } from '../src/submit/qsub.js';

// The hostile corpus, without running it against the prologue here (see the flag in hostile.test.ts).
(globalThis as { vtorqueCasesOnly?: boolean }).vtorqueCasesOnly = true;
const { CASES } = await import('./hostile.test.js');

// A site: a root-owned pool with real qcow2 images, a shared verdict dir, an ini users can read.
const root = mkdtempSync(join(tmpdir(), 'vt-filter-'));
chmodSync(root, 0o755);
const pool = join(root, 'pool');
const verdicts = join(root, 'verdicts');
mkdirSync(pool, { mode: 0o755 });
mkdirSync(verdicts, { mode: 0o755 });
const qemuImg = (...a: string[]) => execFileSync('qemu-img', a, { stdio: 'ignore' });
qemuImg('create', '-q', '-f', 'qcow2', join(pool, 'debian12.qcow2'), '64M');
qemuImg('create', '-q', '-f', 'qcow2', join(pool, 'rocky9.qcow2'), '64M');
qemuImg('create', '-q', '-f', 'qcow2', join(pool, 'good.qcow2'), '32M');
qemuImg('create', '-q', '-f', 'qcow2', '-b', join(pool, 'debian12.qcow2'), '-F', 'qcow2', join(pool, 'overlay.qcow2'));
for (const f of ['debian12.qcow2', 'rocky9.qcow2', 'good.qcow2', 'overlay.qcow2']) chmodSync(join(pool, f), 0o644);
const sha = (f: string) => execFileSync('sha256sum', [join(pool, f)], { encoding: 'utf8' }).split(' ')[0]!;
// Listed after the images were made, as an admin does: cd pool && sha256sum * > SHA256SUMS.
writeFileSync(join(pool, 'SHA256SUMS'), ['rocky9.qcow2', 'good.qcow2'].map((f) => `${sha(f)}  ${f}\n`).join(''), { mode: 0o644 });

const SITE = `[paths]\nimage_pool = ${pool}\nshared_verdicts = ${verdicts}\n`;
function ini(text: string): string {
  const f = join(mkdtempSync(join(root, 'ini-')), 'prologue.ini');
  chmodSync(join(f, '..'), 0o755);
  writeFileSync(f, text, { mode: 0o644 });
  return f;
}
const siteIni = ini(SITE);
const config = parseConfig(SITE, siteIni).config;

// What another node's prologue stored: Debian facts, /opt in use on one of them.
const facts = (optEntries: string[]) => ({
  osv: false,
  exists: { '/usr/bin/cloud-init': true, '/etc/cloud/cloud-init.disabled': false, '/libenviron.so': false, '/tools/mount-fs.so': false, '/usr/mgmt/cloud-init.so': false, '/workspace': true, '/home': true, '/opt-vm': true },
  cloudInitModule: true, cloudCfg: 'datasource_list: [NoCloud, None]\n', cloudCfgD: [], useradd: 'HOME=/home\n', optEntries, notes: [], dpkgCloudInit: true,
  os: { type: 'linux', distro: 'debian', arch: 'x86_64', major: '12', product: '12.7', root: '/dev/sda' },
  datasources: { list: ['NoCloud', 'None'], from: '/etc/cloud/cloud.cfg', errors: [] },
  // /etc/group, as a prologue of this version stores it (rule guest-group).
  groupFile: { size: 64, entries: [{ name: 'root', gid: 0 }, { name: 'users', gid: 100 }], bad: [] },
  // The kernel a direct boot uses, as a prologue of this version stores it (rule bootable).
  boot: { kernel: { vmlinuz: '/boot/vmlinuz-6.1.0-25-amd64', initrd: '/boot/initrd.img-6.1.0-25-amd64', bytes: [8000000, 30000000] }, root: 'UUID=0b6c7a2e-4f4a-4b7c-8d1e-2f3a4b5c6d7e', rootDevice: '/dev/sda', tooLarge: [] },
});
function storeVerdict(image: string, optEntries: string[]) {
  const digest = sha(image);
  const v = { checker: CHECKER_VERSION, policy: policyHash(config), digest, format: { format: 'qcow2', virtualSize: 64 << 20, actualSize: 200000 }, facts: facts(optEntries), checkedAt: new Date().toISOString(), ms: { qemuImg: 1, guestfs: 1 } };
  writeFileSync(join(verdicts, `${digest}-v${CHECKER_VERSION}-${policyHash(config)}.json`), JSON.stringify(v), { mode: 0o644 });
  return v;
}
const badVerdict = storeVerdict('rocky9.qcow2', ['intel', 'license.txt']);
storeVerdict('good.qcow2', []);

interface Run { code: number | null; out: Buffer; err: string }

/** qsub's part: script on stdin, its argv, the user's environment, as the user. */
function filter(script: string | Buffer, o: { args?: string[]; config?: string | null; env?: Record<string, string>; stdin?: number } = {}): Run {
  const cfg = o.config === null ? [] : ['--config', o.config ?? siteIni];
  // Through env -u: tap's process tracking would make the child write under .tap/ as nobody.
  const argv = ['-u', 'NODE_OPTIONS', process.execPath, BIN, ...cfg, 'submit-filter', ...(o.args ?? [])];
  // Without --config: /etc/vtorque hidden (root makes the namespace), then the user's uid, as qsub runs it.
  const [file, args] = o.config === null
    ? withoutSiteConfig('/usr/bin/setpriv', [`--reuid=${NOBODY.uid}`, `--regid=${NOBODY.gid}`, '--clear-groups', '/usr/bin/env', ...argv])
    : ['/usr/bin/env', argv];
  const r = spawnSync(file, args, {
    input: o.stdin === undefined ? script : undefined,
    stdio: [o.stdin ?? 'pipe', 'pipe', 'pipe'],
    ...(o.config === null ? {} : { uid: NOBODY.uid, gid: NOBODY.gid }),
    env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', HOME: '/nonexistent', ...o.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, out: r.stdout, err: r.stderr.toString('utf8') };
}

/** The one line the filter added (or refreshed), and the script without it. */
function added(input: Buffer, out: Buffer): { line: string; index: number; rest: Buffer } {
  const a = out.toString('latin1').split('\n');
  const b = input.toString('latin1').split('\n');
  let i = 0;
  while (i < b.length && a[i] === b[i]) i++;
  // The added line, plus the newline it may have lent to a last line that had none.
  const rest = [...a.slice(0, i), ...a.slice(i + 1)].join('\n');
  return { line: a[i]!, index: i, rest: Buffer.from(rest, 'latin1') };
}

const requestOf = (line: string) => /VTORQUE_REQUEST=(\S+?)\r?$/.exec(line)?.[1];

t.test('a script without a VM request comes back byte for byte, with nothing on stderr', async (t) => {
  const big = Buffer.concat([Buffer.from('#!/bin/sh\n#PBS -l nodes=2\necho start\n'), Buffer.alloc(3 * 1024 * 1024, 0x61), Buffer.from('\n#VM img=x\n')]);
  const scripts: [string, string | Buffer][] = [
    ['plain', '#!/bin/bash\n#PBS -l nodes=1:ppn=4\n#PBS -N plain\necho hi\n'],
    ['empty', ''],
    ['no trailing newline', '#!/bin/sh\necho hi'],
    ['CRLF', '#!/bin/sh\r\n#PBS -N x\r\necho\r\n'],
    ['binary bytes', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 0xff, 0xfe, 0x0a, 0x23, 0x56])],
    ['3 MiB, #VM far below the first command', big],
    ['VM_ in an unrelated -v', '#!/bin/sh\n#PBS -v VM_HOME=/x,OTHER=1\necho\n'],
  ];
  for (const [name, s] of scripts) {
    const input = Buffer.from(s);
    const r = filter(input);
    t.equal(r.code, 0, `${name}: exit 0 (${r.err})`);
    t.ok(r.out.equals(input), `${name}: byte-identical`);
    t.equal(r.err, '', `${name}: silent`);
  }
});

t.test('a script without a VM request never loads the heavy bundle; a VM job does', async (t) => {
  // A preload that lists, at exit, the modules node loaded.
  const probe = join(root, 'probe.cjs');
  writeFileSync(probe, "process.on('exit', () => require('fs').writeFileSync(process.env.PROBE_OUT, Object.keys(require.cache).join('\\n')));\n", { mode: 0o644 });
  const loaded = (script: string) => {
    const out = join(mkdtempSync(join(root, 'probe-')), 'modules');
    chmodSync(join(out, '..'), 0o777);
    const r = spawnSync('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, '-r', probe, BIN, '--config', siteIni, 'submit-filter'], {
      input: script, uid: NOBODY.uid, gid: NOBODY.gid, env: { PATH: '/usr/bin:/bin', PROBE_OUT: out },
    });
    t.equal(r.status, 0, r.stderr.toString());
    return readFileSync(out, 'utf8');
  };
  t.notMatch(loaded('#!/bin/sh\n#PBS -N x\necho\n'), /vtorque-heavy|vendor-/, 'plain script: the fast bundle only');
  t.match(loaded('#!/bin/sh\n#VM vcpus=2\necho\n'), /vtorque-heavy\.cjs/, 'VM job: the heavy bundle');
});

t.test('a #VM line qsub would ignore is pointed out, and the script still passes unchanged', async (t) => {
  const s = '#!/bin/sh\necho hi\n#VM img=debian12.qcow2\n';
  const r = filter(s);
  t.equal(r.code, 0);
  t.equal(r.out.toString(), s);
  t.match(r.err, /^vtorque: line 3: #VM after the first command \(line 2\) is ignored/);
});

t.test('a VM job comes back byte-identical except one #PBS -v line, placed after its directives', async (t) => {
  const cases: { name: string; script: string; args?: string[]; at: number; line: RegExp; ini?: string }[] = [
    { name: 'shebang, #PBS, #VM', script: '#!/bin/bash\n#PBS -l nodes=1\n#PBS -N j\n#VM img=debian12.qcow2,vcpus=4,ram=8G\n\necho hi\n', at: 4, line: /^#PBS -v VTORQUE_REQUEST=v1:img=debian12\.qcow2:vcpus=4:ram=8G$/ },
    { name: '#PBS after #VM', script: '#!/bin/bash\n#VM vcpus=2\n#PBS -N j\necho\n', at: 3, line: /^#PBS -v VTORQUE_REQUEST=v1:vcpus=2$/ },
    { name: 'no #PBS lines', script: '#!/bin/sh\n# my job\n#VM ram=4G\n# more comments\necho\n', at: 3, line: /^#PBS -v VTORQUE_REQUEST=v1:ram=4G$/ },
    { name: 'no shebang', script: '#VM vcpus=3\necho\n', at: 1, line: /^#PBS -v VTORQUE_REQUEST=v1:vcpus=3$/ },
    { name: 'a #PBS line continued with \\', script: '#!/bin/sh\n#VM vcpus=2\n#PBS -l nodes=1,\\\nwalltime=1:00:00\necho\n', at: 4, line: /^#PBS -v VTORQUE_REQUEST=v1:vcpus=2$/ },
    { name: 'the script\'s own #PBS -v variables are repeated (qsub keeps the last -v)', script: '#!/bin/sh\n#PBS -v A=1\n#PBS -v B=2,C\n#VM vcpus=2\necho\n', at: 4, line: /^#PBS -v B=2,C,VTORQUE_REQUEST=v1:vcpus=2$/ },
    { name: 'a -v value with a blank is escaped for qsub', script: '#!/bin/sh\n#PBS -v "A=x y"\n#VM vcpus=2\necho\n', at: 3, line: /^#PBS -v \\"A=x\\ y\\",VTORQUE_REQUEST=v1:vcpus=2$/ },
    { name: 'qsub -C sets the prefix', script: '#!/bin/sh\n#QQ -N x\n#VM vcpus=2\necho\n', args: ['-C', '#QQ'], at: 3, line: /^#QQ -v VTORQUE_REQUEST=v1:vcpus=2$/ },
    { name: 'a VM queue with no #VM lines', script: '#!/bin/sh\n#PBS -q vm\necho\n', at: 2, line: /^#PBS -v VTORQUE_REQUEST=v1$/, ini: `${SITE}[policy]\nvm_queues = vm\n` },
    { name: 'a VM queue given with qsub -q', script: '#!/bin/sh\necho\n', args: ['-q', 'vm@head'], at: 1, line: /^#PBS -v VTORQUE_REQUEST=v1$/, ini: `${SITE}[policy]\nvm_queues = vm\n` },
  ];
  for (const c of cases) {
    const input = Buffer.from(c.script);
    const r = filter(input, { args: c.args, config: c.ini ? ini(c.ini) : undefined });
    t.equal(r.code, 0, `${c.name}: exit 0 (${r.err})`);
    const a = added(input, r.out);
    t.ok(a.rest.equals(input), `${c.name}: nothing else changed`);
    t.equal(a.index, c.at, `${c.name}: added as line ${c.at + 1}`);
    t.match(a.line, c.line, c.name);
    t.equal(r.out.length - input.length, Buffer.byteLength(a.line) + 1, `${c.name}: exactly one line more`);
  }
});

t.test('line endings and a missing last newline are kept as they are', async (t) => {
  const crlf = Buffer.from('#!/bin/bash\r\n#PBS -N x\r\n#VM vcpus=2\r\necho\r\n');
  const r = filter(crlf);
  t.equal(r.code, 0);
  t.equal(r.out.toString(), '#!/bin/bash\r\n#PBS -N x\r\n#VM vcpus=2\r\n#PBS -v VTORQUE_REQUEST=v1:vcpus=2\r\necho\r\n');
  t.match(r.err, /CRLF.*dos2unix/, 'the prologue\'s CRLF note');
  const bare = filter('#VM vcpus=2');
  t.equal(bare.out.toString(), '#VM vcpus=2\n#PBS -v VTORQUE_REQUEST=v1:vcpus=2');
  const big = Buffer.concat([Buffer.from('#!/bin/sh\n#VM vcpus=2\necho\n'), Buffer.alloc(2 * 1024 * 1024, 0x62)]);
  const b = filter(big);
  t.equal(b.code, 0);
  t.ok(added(big, b.out).rest.equals(big), 'a 2 MiB VM script streams through unchanged behind its header');
});

t.test('the added request is what the prologue reads from the script, through Variable_List', async (t) => {
  for (const s of ['#VM img=debian12.qcow2,vcpus=4,ram=1.5G,vms_per_node=2', '#VM distro=debian,img=good.qcow2\n#VM vcpu_pinning=yes,fs_type=ramdisk', '#VM vcpus=2,iocm=true,iocm_min_cores=1,iocm_max_cores=3,metadata=data/x.yaml,unclot_shmem=512M']) {
    const script = `#!/bin/sh\n${s}\necho\n`;
    const r = filter(script);
    t.equal(r.code, 0, r.err);
    const enc = requestOf(added(Buffer.from(script), r.out).line)!;
    t.ok(enc, s);
    // pbs_server keeps it in Variable_List; a sister reads it back with qstat -f.
    const attrs = parseQstat(`Job Id: 1.srv\n    Variable_List = PBS_O_HOME=/home/u,X=a\\,b,${REQUEST_VARIABLE}=${enc},PBS_O_QUEUE=batch\n`);
    t.same(requestFromEncoded(attrs.variables[REQUEST_VARIABLE]!, config), resolveScanned(scanDirectives(script), config), s);
  }
});

t.test('a resubmitted script gets its line refreshed, never a second one', async (t) => {
  const first = Buffer.from('#!/bin/sh\n#PBS -v A=1\n#VM vcpus=2\necho\n');
  const once = filter(first).out;
  const twice = filter(once);
  t.equal(twice.code, 0);
  t.ok(twice.out.equals(once), 'filtering a filtered script changes nothing');
  const edited = Buffer.from(once.toString().replace('#VM vcpus=2', '#VM vcpus=6'));
  const again = filter(edited);
  t.equal(again.code, 0, again.err);
  t.equal(again.out.toString(), '#!/bin/sh\n#PBS -v A=1\n#VM vcpus=6\n#PBS -v A=1,VTORQUE_REQUEST=v1:vcpus=6\necho\n');
  const gone = filter(Buffer.from(once.toString().replace('#VM vcpus=2\n', '')));
  t.equal(gone.code, 1, 'a stale request without #VM lines is refused');
  t.match(gone.err, /line 3: is left from an earlier submission; the script has no #VM lines now\. Fix: delete that line/);
});

t.test('VTORQUE_REQUEST written by hand is refused, wherever it comes from', async (t) => {
  const vm = '#!/bin/sh\n#VM vcpus=2\necho\n';
  const cmd = filter(vm, { args: ['-v', `${REQUEST_VARIABLE}=v1:vcpus=64`] });
  t.equal(cmd.code, 1);
  t.match(cmd.err, /qsub -v: sets VTORQUE_REQUEST, which the submit filter writes itself/);
  const mid = filter(`#!/bin/sh\n#PBS -v ${REQUEST_VARIABLE}=v1:vcpus=64,A=1\n#VM vcpus=2\necho\n`);
  t.equal(mid.code, 1);
  t.match(mid.err, /line 2: sets VTORQUE_REQUEST/);
  const plain = filter(`#!/bin/sh\n#PBS -v A=1,${REQUEST_VARIABLE}=v1:vcpus=8\necho\n`);
  t.equal(plain.code, 1, 'a non-VM script carrying one would make the sisters start VMs');
  // A job submitted from inside a VM job inherits the variable; qsub -V would pass it on.
  const env = { [REQUEST_VARIABLE]: 'v1:vcpus=8' };
  const stale = filter(vm, { args: ['-V'], env });
  t.equal(stale.code, 1);
  t.match(stale.err, /environment: VTORQUE_REQUEST is set .* Fix: unset it for this qsub: env -u VTORQUE_REQUEST qsub -V/);
  t.equal(filter('#!/bin/sh\necho\n', { args: ['-V'], env }).code, 1, 'also for a job without #VM lines');
  t.equal(filter(vm, { args: ['-V'], env: { [REQUEST_VARIABLE]: 'v1:vcpus=2' } }).code, 0, 'the same request is harmless');
  t.equal(filter(vm, { env }).code, 0, 'without -V the environment does not reach the job');
});

t.test('qsub -v drops the added line (Torque keeps the last -v): refused for multi-node jobs, a warning otherwise', async (t) => {
  const multi = filter('#!/bin/sh\n#PBS -l nodes=2:ppn=4\n#VM vcpus=2,ram=4G\necho\n', { args: ['-v', 'A=1'] });
  t.equal(multi.code, 1);
  t.match(multi.err, /would not reach the other 1 node of this job/);
  t.match(multi.err, /Fix: .*add the request to qsub -v: VM_VCPUS=2,VM_RAM=4G/);
  const one = filter('#!/bin/sh\n#VM vcpus=2\necho\n', { args: ['-l', 'nodes=1', '-v', 'A=1'] });
  t.equal(one.code, 0);
  t.match(one.err, /warning: qsub -v replaces the script's #PBS -v lines/);
  t.equal(filter('#!/bin/sh\n#VM vcpus=2\necho\n', { args: ['-l', 'nodes=3', '-v', 'A=1,VM_VCPUS=2'] }).code, 0, 'unless the request is in the -v itself');
  t.equal(filter('#!/bin/sh\n#VM vcpus=2,ram=4G\necho\n', { args: ['-l', 'nodes=3', '-v', 'A=1,VM_VCPUS=2'] }).code, 1, 'in full: the sisters would miss ram=4G');
  t.equal(filter('#!/bin/sh\n#PBS -l nodes=2\n#PBS -v VM_VCPUS=2\necho\n', { args: ['-v', 'A=1'] }).code, 1, 'VM_ variables of the script are dropped by qsub -v as well');
  const noPrefix = filter('#!/bin/sh\n#VM vcpus=2\necho\n', { args: ['-C', ''] });
  t.equal(noPrefix.code, 0, 'qsub -C \'\' turns directives off: nothing can be added');
  t.equal(noPrefix.out.toString(), '#!/bin/sh\n#VM vcpus=2\necho\n', 'and no shell command is added either');
  t.match(noPrefix.err, /warning: the directive prefix "" cannot carry VTORQUE_REQUEST/);
  t.equal(filter('#!/bin/sh\n#VM vcpus=2\necho\n', { args: ['-C', '', '-l', 'nodes=2'] }).code, 1);
});

t.test('VM_<KEY> job variables are a request too, checked like #VM lines', async (t) => {
  const plain = '#!/bin/sh\necho\n';
  const bad = filter(plain, { args: ['-v', 'VM_VCPUS=0,VM_IMG=debian12.qcow2'] });
  t.equal(bad.code, 1);
  t.match(bad.err, /qsub -v VM_VCPUS: vcpus: 0 is out of range/);
  const good = filter(plain, { args: ['-v', 'VM_VCPUS=4,A=1'] });
  t.equal(good.code, 0, good.err);
  t.match(added(Buffer.from(plain), good.out).line, /VTORQUE_REQUEST=v1:vcpus=4$/);
  const clash = filter('#!/bin/sh\n#VM vcpus=2\necho\n', { args: ['-v', 'VM_VCPUS=4'] });
  t.equal(clash.code, 1);
  t.match(clash.err, /VM_VCPUS: #VM gives vcpus=2 but VM_VCPUS=4/);
  t.equal(filter('#!/bin/sh\n#PBS -V\necho\n', { env: { VM_RAM: 'lots' } }).code, 1, '#PBS -V in the script too');
  const exported = filter(plain, { args: ['-V'], env: { VM_RAM: 'lots' } });
  t.equal(exported.code, 1, 'qsub -V passes the environment, VM_ variables included');
  t.match(exported.err, /VM_RAM: ram: "lots" is not a size/);
});

t.test('every bad directive of the hostile corpus is refused at qsub with the prologue\'s message', async (t) => {
  const usable = CASES.filter((c) => c.script !== undefined && !c.setup && !c.argv);
  t.ok(usable.length >= 30, `${usable.length} corpus cases apply to a submit filter`);
  for (const c of usable) {
    const cfg = c.iniText !== undefined ? ini(c.iniText) : c.ini !== undefined ? ini(SITE + c.ini) : siteIni;
    const input = Buffer.from(c.script!);
    const r = filter(input, { config: cfg });
    t.equal(r.code, c.code, `${c.name}: exit ${c.code} (${r.err.slice(0, 300)})`);
    if (c.code !== 0) {
      t.match(r.err, c.says, `${c.name}: the prologue's message`);
      for (const l of r.err.split('\n').filter((x) => x !== '')) t.match(l, /^vtorque: /, `${c.name}: every line is ours`);
    } else {
      const lines = r.out.length - input.length;
      t.ok(lines === 0 ? r.out.equals(input) : added(input, r.out).rest.equals(input), `${c.name}: passed through`);
    }
  }
});

t.test('the image must be in the pool and look like a safe disk, as on the node', async (t) => {
  const missing = filter('#!/bin/sh\n#VM img=centos7.qcow2\necho\n');
  t.equal(missing.code, 1);
  t.match(missing.err, /img=centos7\.qcow2: there is no image "centos7\.qcow2" in the image pool/);
  const overlay = filter('#!/bin/sh\n#VM img=overlay.qcow2\necho\n');
  t.equal(overlay.code, 1);
  t.match(overlay.err, /overlay\.qcow2: is a qcow2 overlay with a backing file/);
  const user = filter('#!/bin/sh\n#VM img=/tmp/mine.qcow2\necho\n');
  t.equal(user.code, 1);
  t.match(user.err, /this site only allows images from its pool/);
  // A login node without the pool: not the job's fault, the node checks it later.
  const nopool = filter('#!/bin/sh\n#VM img=debian12.qcow2\necho\n', { config: ini(`[paths]\nimage_pool = ${join(root, 'nowhere')}\n`) });
  t.equal(nopool.code, 0);
  t.match(nopool.err, /image debian12\.qcow2 was not checked here \(image pool .* is not usable \(ENOENT\)\); the node checks it when the job starts/);
});

t.test('a verdict in [paths] shared_verdicts refuses a known-bad image with the prologue\'s rule messages', async (t) => {
  const r = filter('#!/bin/sh\n#VM img=rocky9.qcow2,distro=debian\necho\n');
  t.equal(r.code, 1);
  // What the prologue throws for the same facts: failedRules over evaluateRules.
  const rules = evaluateRules(badVerdict.facts as never, { distro: 'debian', arch: 'x86_64' }, config);
  const expected = failedRules({ image: { name: 'rocky9.qcow2' } as never, digest: badVerdict.digest, verdict: badVerdict as never, rules, fromCache: true, hashed: false });
  t.ok(expected.some((p) => p.id === 'opt-unused'));
  t.match(r.err, /job not submitted: image rocky9\.qcow2 does not meet this site's guest image requirements \(1 rule\)/);
  for (const p of expected) t.ok(r.err.includes(problemLine(p)), `the prologue's line for ${p.id}`);
  const good = filter('#!/bin/sh\n#VM img=good.qcow2,distro=debian\necho\n');
  t.equal(good.code, 0, good.err);
  // SHA256SUMS older than the image may describe an older file: no verdict is trusted.
  utimesSync(join(pool, 'SHA256SUMS'), new Date(Date.now() - 86400e3), new Date(Date.now() - 86400e3));
  t.teardown(() => utimesSync(join(pool, 'SHA256SUMS'), new Date(), new Date()));
  t.equal(filter('#!/bin/sh\n#VM img=rocky9.qcow2\necho\n').code, 0, 'stale SHA256SUMS: the node decides');
  t.equal(filter('#!/bin/sh\n#VM img=rocky9.qcow2\necho\n', { config: ini(`${SITE}[policy]\nrequire_checksums = true\n`) }).code, 1, 'unless the prologue enforces SHA256SUMS anyway');
});

t.test('without the admin\'s ini (unreadable for users) only the form is checked', async (t) => {
  const big = filter('#!/bin/sh\n#VM ram=999G,vcpus=200\necho\n', { config: null });
  t.equal(big.code, 0, 'the limits are the node\'s to check');
  t.match(big.err, /prologue\.ini is not readable here, so only the form of the VM request was checked/);
  t.match(added(Buffer.from('#!/bin/sh\n#VM ram=999G,vcpus=200\necho\n'), big.out).line, /VTORQUE_REQUEST=v1:vcpus=200:ram=999G$/);
  const bad = filter('#!/bin/sh\n#VM ram=999X\necho\n', { config: null });
  t.equal(bad.code, 1);
  t.match(bad.err, /line 2: ram: "999X" is not a size/);
});

t.test('a broken site config or a failing filter refuses the job, never passes it', async (t) => {
  const broken = filter('#!/bin/sh\n#VM vcpus=2\necho\n', { config: ini('[policy]\nmax_vcpus = many\n') });
  t.equal(broken.code, 2);
  t.match(broken.err, /job not submitted: config .* is invalid .* tell your admin/);
  t.equal(broken.out.length, 0);
  // stdin that cannot be read (a directory): an error no check foresaw.
  const fd = openSync(root, 'r');
  const odd = filter('', { stdin: fd });
  closeSync(fd);
  t.equal(odd.code, 2);
  t.match(odd.err, /job not submitted: the submit filter failed \(internal error\)/);
  t.equal(odd.out.length, 0, 'nothing on stdout');
});

t.test('help explains the contract and how to install it in torque.cfg', async (t) => {
  const r = spawnSync(process.execPath, [BIN, 'help', 'submit-filter'], { encoding: 'utf8' });
  t.equal(r.status, 0);
  for (const w of ['stdin', 'SUBMITFILTER', 'torque.cfg', 'VTORQUE_REQUEST', 'Example', 'Exit codes']) t.match(r.stdout, w);
  t.equal(spawnSync(process.execPath, [BIN, 'submit-filter', '--help'], { encoding: 'utf8' }).stdout, r.stdout);
});

t.test('qsub\'s own parsing, as the filter reproduces it', async (t) => {
  t.same(parseQsubArgs(['-q', 'vm@head', '-vA=1,B', '-V', '-l', 'nodes=2', '-N', 'x', 'job.sh', '-v', 'ignored']), { vLists: ['A=1,B'], exportEnv: true, resources: ['nodes=2'], queue: 'vm@head', script: 'job.sh', name: 'x' });
  // Torque 6's GETOPT_ARGS: -i, -K and -L take a value, so the word after them is not the script.
  t.same(parseQsubArgs(['-K', '5', '-L', 'tasks=1', '-i', 'img', 'job.sh']).script, 'job.sh');
  t.same(parseQsubArgs(['-IV', '-C', '#X']), { vLists: [], exportEnv: true, resources: [], prefix: '#X' });
  t.same(splitDirective(' -v "A=1 2",B=\\ 3  -N x'), ['-v', '"A=1 2",B= 3', '-N', 'x']);
  const h = qsubHeader('#!/bin/sh\n: colon\n#PBS -N a\\\n#PBS -q b\n  #PBS -l nodes=1\necho\n#PBS -N late\n', '#PBS');
  t.same(h.directives.map((d) => [d.first.index, d.last.index, d.words]), [[2, 3, ['-N', 'a#PBS', '-q', 'b']], [4, 4, ['-l', 'nodes=1']]]);
  t.equal(h.lines.length, 5, 'the header ends at the first command; a \':\' line is not one');
  t.equal(nodeCount(['walltime=1:00:00,nodes=2:ppn=4+1:ppn=2']), 3);
  t.equal(nodeCount(['nodes=n1+n2']), 2);
  t.equal(nodeCount(['nodes=1', 'nodes=4']), 4, 'the last -l wins');
  t.equal(nodeCount(['walltime=1:00:00']), undefined);
});

t.test('#PBS -vm lines (vTorque\'s form) become #VM lines before qsub reads them; nothing else changes', async (t) => {
  const vt = Buffer.from('#!/bin/bash\n#PBS -l nodes=1\n#PBS -vm img=debian12.qcow2,vcpus=4\n#PBS  -vm\tram=8G\n#PBS -N j\n\necho hi\n');
  const native = Buffer.from('#!/bin/bash\n#PBS -l nodes=1\n#VM img=debian12.qcow2,vcpus=4\n#VM\tram=8G\n#PBS -N j\n\necho hi\n');
  const a = filter(vt);
  const b = filter(native);
  t.equal(a.code, 0, a.err);
  t.equal(b.code, 0, b.err);
  t.equal(a.out.toString('latin1'), b.out.toString('latin1'), 'the same script as the #VM form, the same request line');
  t.match(a.err, /lines 3, 4: '#PBS -vm' is vTorque's form of '#VM'/);
  // qsub then finds no -vm directive in what it parses.
  t.notOk(qsubHeader(a.out.toString('latin1'), '#PBS').directives.some((d) => d.words[0]?.startsWith('-vm')));
});

t.test('a #PBS -vm that qsub would misread (-v m) or that is malformed is refused, with where and how to fix it', async (t) => {
  const cases: [string, RegExp][] = [
    ['#!/bin/sh\n  #PBS -vm img=debian12.qcow2\necho\n', /line 2: .*qsub would take it as '-v m.*Fix: write it as '#PBS -vm key=value,...' at the start of the line/],
    ['#!/bin/sh\n#PBS -vmimg=debian12.qcow2\necho\n', /line 2: .*qsub would take it as '-v m.*Fix: write it as '#PBS -vm key=value,...' at the start of the line/],
    ['#!/bin/sh\n#PBS -vm\necho\n', /line 2: #PBS -vm has nothing after it/],
    ['#!/bin/sh\n#PBS -vm vcpus=2,\\\n  ram=4G\necho\n', /line 2: .*continued/],
    ['#!/bin/sh\n#PBS -vm vcpu=2\necho\n', /line 2: unknown key "vcpu".*did you mean vcpus/],
  ];
  for (const [s, re] of cases) {
    const r = filter(s);
    t.equal(r.code, 1, s);
    t.equal(r.out.length, 0, 'nothing reaches qsub');
    t.match(r.err, /vtorque: job not submitted/, s);
    t.match(r.err, re, s);
  }
});
