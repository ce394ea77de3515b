// The boot files (kernel, initrd, root) of a cached base are taken out once
// with guestfish and the answer is kept in <cache_dir>/kernels/<digest>/boot.json.
// Only the answer of a guestfish that finished may be kept: a real node once
// stored {"kernel":false,"source":"no operating system found (... did not
// finish within 120 s)"} after a time-out, and every later VM of that image
// booted another way. A guestfish that timed out, crashed or was killed is a
// node fault naming it (exit 2), nothing is recorded, and no VM is started.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mom } from './harness/mom.js';
import { bootGuestImage, bootingIni, qemusOf } from './harness/launch-user.js';
import { parseConfig } from '../src/config/load.js';
import { bootFiles } from '../src/launch/bootfiles.js';
import { isNodeFault } from '../src/core/errors.js';

t.setTimeout(1800_000);

const script = '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=1G,vcpus=1\necho hello\n';
// What an older version wrote after guestfish timed out: the real node's entry.
const LEGACY_TIMEOUT = '{"kernel":false,"source":"no operating system found (/usr/bin/guestfish did not finish within 120 s)"}\n';

t.test('a guestfish that times out while taking out the kernel: a node fault naming guestfish, no boot.json, no qemu; the next run with the real guestfish extracts the kernel', async (t) => {
  const guest = bootGuestImage();
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, privateCache: true });
  const job = (n: number) => ({ id: `${process.pid}${n}.head`, script });
  t.teardown(() => { for (const n of [1, 2, 3]) for (const p of qemusOf(job(n).id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });

  // The image verified and cached with the real guestfish, no VM started: what the slow guestfish below meets is the boot-file look alone.
  const a = await mom.prologue(job(1));
  t.equal(a.code, 0, a.er);
  const digest: string = JSON.parse(readFileSync(join(mom.jobDir, job(1).id, 'manifest.json'), 'utf8')).base.digest;
  t.equal((await mom.run('epilogue', job(1))).code, 0);
  const kernels = join(mom.cacheDir, 'kernels', digest);
  t.notOk(existsSync(kernels), 'no boot files yet: [launch] start was false');

  // A guestfish that never finishes (an appliance stuck on a loaded node), and a qemu that says if it was ever run.
  const slow = join(mom.root, 'bin', 'slow-guestfish');
  writeFileSync(slow, '#!/bin/sh\nsleep 1000\n');
  chmodSync(slow, 0o755);
  const calls = join(mom.root, 'qemu-calls');
  mkdirSync(calls, { mode: 0o777 });
  chmodSync(calls, 0o1777); // qemu runs as the launch account
  const qemu = join(mom.root, 'bin', 'recording-qemu');
  writeFileSync(qemu, `#!/bin/sh\necho "$@" >> ${calls}/qemu.calls\nexec /usr/bin/qemu-system-x86_64 "$@"\n`);
  chmodSync(qemu, 0o755);
  writeFileSync(mom.configFile, mom.defaultIni().replace('[tools]\n', `[tools]\nguestfish = ${slow}\nqemu_system = ${qemu}\n`) + bootingIni(600) + '[timeouts]\ntool = 10\n');
  const b = await mom.prologue(job(2), { alarm: 1300 });
  t.comment(b.er);
  t.equal(b.code, 2, 'exit 2: the node could not look, the job is requeued');
  t.match(b.er, /guestfish could not look for the kernel of cached image [0-9a-f]{12}: \S*slow-guestfish did not finish within 10 s/, 'the report names guestfish and the time-out');
  t.notMatch(b.er, /no operating system/, 'a time-out is not read as an image without an OS');
  t.notOk(existsSync(join(kernels, 'boot.json')), 'no boot.json was written');
  t.notOk(existsSync(kernels), 'nor any kernels directory');
  t.notOk(existsSync(join(calls, 'qemu.calls')), 'qemu was never run');
  t.same(qemusOf(job(2).id), [], 'no qemu of the job runs');
  const log = mom.logLines();
  const failed = log.find((l) => l.msg === 'job failed');
  t.match(JSON.stringify(failed?.err), /guestfish/, 'the admin log names guestfish');
  t.equal(failed?.exit, 2);
  t.notOk(log.some((l) => l.msg === 'boot files and accelerator'), 'the boot went no further than the boot files');
  t.ok(mom.pbsnodesCalls().some((c) => c.includes('-o')), 'a node fault: the node takes itself offline');
  t.equal((await mom.run('epilogue', job(2))).code, 0);

  // The entry an older version left after such a time-out is not believed either.
  mkdirSync(kernels, { recursive: true, mode: 0o755 });
  writeFileSync(join(kernels, 'boot.json'), LEGACY_TIMEOUT);
  writeFileSync(mom.configFile, mom.defaultIni() + bootingIni(600));
  const c = await mom.prologue(job(3), { alarm: 1300 });
  t.comment(c.ou + c.er);
  t.equal(c.code, 0, c.er);
  t.match(c.ou, /vtorque: VM \S+ booted in [0-9.]+ s \(tcg\)/, 'the VM booted');
  const boot = JSON.parse(readFileSync(join(kernels, 'boot.json'), 'utf8'));
  t.equal(boot.kernel, true, `the real guestfish took out the kernel: ${JSON.stringify(boot)}`);
  t.match(boot.root, /^UUID=/);
  t.ok(existsSync(join(kernels, 'vmlinuz')) && existsSync(join(kernels, 'initrd.img')), 'vmlinuz and initrd.img are cached');
  const booted = mom.logLines().find((l) => l.msg === 'boot files and accelerator');
  t.equal(booted?.kernel, join(kernels, 'vmlinuz'), 'the VM was booted with the extracted kernel');
  t.equal((await mom.run('epilogue', job(3))).code, 0);
  t.same(qemusOf(job(3).id), []);
});

t.test('only answers about the image are recorded: "no operating system" and output past the bound are kept; a crashed guestfish is a node fault and leaves nothing', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vtorque-bootfiles-'));
  chmodSync(root, 0o755);
  const blank = join(root, 'blank.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', blank, '64M']);
  const cache = join(root, 'cache');
  const ini = (extra = '') => parseConfig(`[paths]\ncache_dir = ${cache}\n[guestfs]\naccel = tcg\n${extra}`, 'bootfiles-test.ini').config;
  const base = (n: string) => ({ path: blank, format: 'qcow2', digest: n.repeat(64) });

  // A crash of the appliance exits 1, as "no operating system" does; only the latter is an answer.
  const crash = join(root, 'crashing-guestfish');
  writeFileSync(crash, "#!/bin/sh\necho 'libguestfs: error: appliance closed the connection unexpectedly.' >&2\nexit 1\n");
  chmodSync(crash, 0o755);
  const e = await bootFiles(ini(`[tools]\nguestfish = ${crash}\n`), base('a')).then(() => undefined, (x: unknown) => x);
  t.ok(isNodeFault(e), `a node fault: ${String((e as Error)?.message)}`);
  t.match((e as Error).message, /guestfish could not look for the kernel of cached image aaaaaaaaaaaa: .*crashing-guestfish failed \(exit code 1\)/);
  t.match((e as { problems: { where?: string }[] }).problems[0]?.where, /\[tools\] guestfish/);
  t.notOk(existsSync(join(cache, 'kernels', 'a'.repeat(64))), 'nothing recorded for the crash');

  // Output past the bound comes from the image (a /boot of thousands of names): an answer, never a node fault a user's image could cause.
  const loud = join(root, 'loud-guestfish');
  writeFileSync(loud, "#!/bin/sh\nhead -c 2000000 /dev/zero | tr '\\0' x\n");
  chmodSync(loud, 0o755);
  const l = await bootFiles(ini(`[tools]\nguestfish = ${loud}\n`), base('c'));
  t.equal(l.kernel, undefined, 'no kernel: the bootloader boots it');
  t.match(l.source, /printed more than 1 MiB/);
  t.equal(JSON.parse(readFileSync(join(cache, 'kernels', 'c'.repeat(64), 'boot.json'), 'utf8')).v, 2, 'and it is recorded');

  // The real guestfish on a disk with no OS: a finished look, kept, over an older version's time-out entry.
  const dir = join(cache, 'kernels', 'b'.repeat(64));
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, 'boot.json'), LEGACY_TIMEOUT);
  const r = await bootFiles(ini(), base('b'));
  t.equal(r.kernel, undefined, 'no kernel: the disk boots from its own bootloader');
  t.match(r.source, /^no operating system found \(guestfish -i: no operating system was found on this disk\)$/);
  const kept = JSON.parse(readFileSync(join(dir, 'boot.json'), 'utf8'));
  t.same(kept, { v: 2, kernel: false, source: r.source }, 'the answer is recorded, the legacy entry replaced');
  // Kept: the next call does not run guestfish at all (a crashing one would fail it).
  const again = await bootFiles(ini(`[tools]\nguestfish = ${crash}\n`), base('b'));
  t.equal(again.source, r.source, 'the recorded answer is used');
});
