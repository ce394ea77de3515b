// The boot files (kernel, initrd, root) come with the verdict: the one
// libguestfs appliance that verifies a cold image also takes its kernel and
// initrd out into <cache_dir>/kernels/<digest>/ (one launch per cold image,
// not two). A verdict whose files the cache lacks is made again with the
// copy. A guestfish that does not finish told us nothing about the image: a
// node fault naming guestfish (exit 2), no VM is started and nothing is kept.
// A real node once read such a time-out as "no operating system found" and
// booted a bootloader-less image through the firmware.
import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, testImages } from './harness/mom.js';
import { bootGuestImage, bootingIni, qemusOf } from './harness/launch-user.js';

t.setTimeout(1800_000);

const script = (img = 'boot-guest.qcow2') => `#!/bin/bash\n#VM img=${img},ram=1G,vcpus=1\necho hello\n`;

/** A guestfish that counts its runs, a slow one that sleeps past [timeouts] tool, and a qemu that says if it was ever run. */
function tools(mom: Mom) {
  const bin = join(mom.root, 'bin');
  const calls = join(mom.root, 'calls');
  mkdirSync(calls, { mode: 0o777 });
  chmodSync(calls, 0o1777); // qemu runs as the launch account
  const counting = join(bin, 'counting-guestfish');
  writeFileSync(counting, `#!/bin/sh\necho "$*" >> ${calls}/guestfish.calls\nexec /usr/bin/guestfish "$@"\n`);
  const slow = join(bin, 'slow-guestfish');
  writeFileSync(slow, `#!/bin/sh\necho "$*" >> ${calls}/guestfish.calls\nsleep 1000\n`);
  const qemu = join(bin, 'recording-qemu');
  writeFileSync(qemu, `#!/bin/sh\necho "$@" >> ${calls}/qemu.calls\nexec /usr/bin/qemu-system-x86_64 "$@"\n`);
  for (const f of [counting, slow, qemu]) chmodSync(f, 0o755);
  const count = (what: 'guestfish' | 'qemu') => {
    try {
      return readFileSync(join(calls, `${what}.calls`), 'utf8').split('\n').filter(Boolean).length;
    } catch {
      return 0;
    }
  };
  const reset = () => rmSync(join(calls, 'guestfish.calls'), { force: true });
  // The recording qemu only where no VM may start: the launcher checks that a VM's pid is qemu_system's own.
  const ini = (guestfish: string, extra = '', o: { recordQemu?: boolean } = {}) =>
    mom.defaultIni().replace('[tools]\n', `[tools]\nguestfish = ${guestfish}\n${o.recordQemu ? `qemu_system = ${qemu}\n` : ''}`) + bootingIni(600) + extra;
  return { counting, slow, count, reset, ini };
}

const digestOf = (mom: Mom, id: string): string => JSON.parse(readFileSync(join(mom.jobDir, id, 'manifest.json'), 'utf8')).base.digest;
const stagedLeft = (mom: Mom) => { try { return readdirSync(join(mom.cacheDir, 'kernels')).filter((n) => n.startsWith('.tmp-')); } catch { return []; } };

t.test('a cold image: one guestfish run verifies it and takes out its kernel, and the VM boots with that kernel', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': bootGuestImage() }, privateCache: true });
  const tl = tools(mom);
  const job = (n: number) => ({ id: `${process.pid}${n}.head`, script: script() });
  t.teardown(() => { for (const n of [1, 2, 3, 4]) for (const p of qemusOf(job(n).id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });

  writeFileSync(mom.configFile, tl.ini(tl.counting));
  const a = await mom.prologue(job(1), { alarm: 1300 });
  t.comment(a.ou + a.er);
  t.equal(a.code, 0, a.er);
  t.match(a.ou, /vtorque: VM \S+ booted in [0-9.]+ s \(tcg\)/, 'the VM booted');
  t.equal(tl.count('guestfish'), 1, 'one guestfish run (one appliance) for the cold image');
  const digest = digestOf(mom, job(1).id);
  const kernels = join(mom.cacheDir, 'kernels', digest);
  const boot = JSON.parse(readFileSync(join(kernels, 'boot.json'), 'utf8'));
  t.match(boot, { v: 3, vmlinuz: /^\/boot\/vmlinuz-/, initrd: /^\/boot\/initrd\.img-/ }, 'boot.json names the guest files the verdict names');
  const verdict = mom.logLines().find((l) => l.msg === 'verdict stored');
  t.equal(verdict?.bootFiles, true, 'kept with the verdict');
  const booted = mom.logLines().find((l) => l.msg === 'boot files and accelerator');
  t.equal(booted?.kernel, join(kernels, 'vmlinuz'), 'the VM was booted with the kernel taken out');
  t.match(booted?.root, /^UUID=/);
  t.equal((await mom.run('epilogue', job(1))).code, 0);
  t.same(qemusOf(job(1).id), []);

  // The files a verdict names are missing (check --image made the verdict, or
  // the base was evicted while its verdict stayed): the base is verified
  // again, and a guestfish that never finishes doing it is the node's fault,
  // naming guestfish; no VM, nothing kept.
  rmSync(kernels, { recursive: true });
  tl.reset();
  writeFileSync(mom.configFile, tl.ini(tl.slow, '[timeouts]\ntool = 10\n', { recordQemu: true }));
  const b = await mom.prologue(job(2), { alarm: 1300 });
  t.comment(b.er);
  t.equal(b.code, 2, 'exit 2: the node could not verify the base again, the job is requeued');
  t.match(b.er, /guestfish/, 'the report names guestfish');
  t.notMatch(b.er, /no operating system|check that the image boots/, 'a time-out is not read as something about the image');
  const failed = mom.logLines().find((l) => l.msg === 'job failed');
  t.match(JSON.stringify(failed?.err), /guestfish did not answer within 10 s/);
  t.match(JSON.stringify(failed?.err), /\[tools\] guestfish \(\S*slow-guestfish\)/, 'the config key and the tool');
  t.equal(failed?.exit, 2);
  t.equal(tl.count('guestfish'), 1, 'the slow guestfish was the one run');
  t.equal(tl.count('qemu'), 0, 'no qemu was started');
  t.same(qemusOf(job(2).id), []);
  t.notOk(existsSync(kernels), 'nothing kept');
  t.same(stagedLeft(mom), [], 'no staging directory left');
  t.ok(mom.pbsnodesCalls().some((c) => c.includes('-o')), 'a node fault: the node takes itself offline');
  t.equal((await mom.run('epilogue', job(2))).code, 0);

  // The same with the real guestfish (no VM started, [launch] start = false): one appliance, and the files are back.
  tl.reset();
  writeFileSync(mom.configFile, tl.ini(tl.counting, '[launch]\nstart = false\n'));
  const c = await mom.prologue(job(3), { alarm: 1300 });
  t.equal(c.code, 0, c.er);
  t.equal(tl.count('guestfish'), 1, 'one appliance verified the base again and took the files out');
  t.same(JSON.parse(readFileSync(join(kernels, 'boot.json'), 'utf8')), boot, 'the same files');
  t.equal((await mom.run('epilogue', job(3))).code, 0);
  const d = await mom.prologue(job(4), { alarm: 1300 });
  t.equal(d.code, 0, d.er);
  t.equal(tl.count('guestfish'), 1, 'held: no appliance for the next job');
  t.equal((await mom.run('epilogue', job(4))).code, 0);
});

t.test('a guestfish that does not finish while it verifies a cold image: a node fault naming it, no VM, nothing cached', async (t) => {
  const mom = new Mom({ pool: { 'boot-guest.qcow2': bootGuestImage() }, privateCache: true });
  const tl = tools(mom);
  const job = { id: `${process.pid}9.head`, script: script() };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  writeFileSync(mom.configFile, tl.ini(tl.slow, '[timeouts]\ntool = 10\n', { recordQemu: true }));
  const r = await mom.prologue(job, { alarm: 1300 });
  t.comment(r.er);
  t.equal(r.code, 2, 'exit 2');
  t.match(r.er, /guestfish/, 'the report names guestfish');
  t.notMatch(r.er, /no operating system|fails os-family|fails bootable/, 'not a verdict about the image');
  const failed = mom.logLines().find((l) => l.msg === 'job failed');
  t.match(JSON.stringify(failed?.err), /guestfish did not answer within 10 s/);
  t.match(JSON.stringify(failed?.err), /\[tools\] guestfish \(\S*slow-guestfish\)/);
  t.equal(tl.count('qemu'), 0, 'no qemu was started');
  const ls = (d: string) => { try { return readdirSync(join(mom.cacheDir, d)); } catch { return []; } };
  t.same(ls('verdicts'), [], 'no verdict');
  t.same(ls('images').filter((n) => /\.(qcow2|raw|vmdk)$/.test(n)), [], 'no base');
  t.same(ls('kernels'), [], 'no boot files, no staging directory');
  t.equal((await mom.run('epilogue', job)).code, 0);
});

t.test('an image with neither a kernel nor a bootloader fails bootable (exit 1), before any VM', async (t) => {
  const mom = new Mom({ pool: { 'no-boot.qcow2': join(testImages(), 'debian-no-boot.qcow2') }, privateCache: true });
  const tl = tools(mom);
  const job = { id: `${process.pid}8.head`, script: script('no-boot.qcow2') };
  writeFileSync(mom.configFile, tl.ini(tl.counting, '', { recordQemu: true }));
  const r = await mom.prologue(job, { alarm: 1300 });
  t.comment(r.er);
  t.equal(r.code, 1, 'the job\'s fault: exit 1');
  t.match(r.er, /fails bootable: has neither a kernel to boot directly \(no \/vmlinuz with \/initrd\.img, and no \/boot\/vmlinuz-VERSION with its initrd\) nor a BIOS bootloader/);
  t.match(r.er, /grub-install/, 'with the fix');
  t.equal(tl.count('qemu'), 0, 'no qemu was started');
  t.equal(tl.count('guestfish'), 1, 'one appliance');
  t.notOk(mom.pbsnodesCalls().some((c) => c.includes('-o')), 'the node stays online');
  t.equal((await mom.run('epilogue', job)).code, 0);
});
