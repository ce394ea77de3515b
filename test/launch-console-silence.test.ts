// [launch] console_silence: a VM that writes not one byte to its serial
// console within it is given up (vm-silent) instead of being waited for the
// whole [launch] boot; one that writes, however slowly it then boots, is not.
// Real qemu under TCG, as the launch account, with qemu's command line from
// qemuArgv: the boot guest of scripts/build-boot-guest has no bootloader, so
// booted through the firmware (no kernel of ours) it prints nothing, as the
// cold job of issue 21 case 4 did for 956 s; booted with its kernel, it prints
// at once.
import t, { type Test } from 'tap';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import { VmBootError, bootFault, consoleTail, handOverSockets, makeRunDir, qemuArgv, resolveLaunchAccount, runPathsOf, startVm, waitReady } from '../src/launch/qemu.js';
import type { BootFiles } from '../src/launch/bootfiles.js';
import { bootGuestImage, bootGuestOverlay, ensureLaunchUser } from './harness/launch-user.js';

t.setTimeout(1800_000);

const SILENCE = 30;

/** Starts one VM of the boot guest (an overlay on it) with these boot files; the wait's outcome, the console's first byte and its tail. */
async function bootAndWait(t: Test, name: string, boot: (dir: string) => BootFiles, append: string | undefined, waitSeconds: number) {
  ensureLaunchUser();
  const guest = bootGuestImage();
  const config = parseConfig(`[launch]\nstart = true\naccel = tcg\nconsole_silence = ${SILENCE}\n`, 'x').config;
  t.equal(config.launch.console_silence, SILENCE);
  const account = await resolveLaunchAccount(config);
  const jobDir = mkdtempSync(join(tmpdir(), 'vtorque-silence-'));
  chmodSync(jobDir, 0o755);
  t.teardown(() => rmSync(jobDir, { recursive: true, force: true }));
  const overlay = bootGuestOverlay(jobDir, guest, account);
  makeRunDir(jobDir, account);
  const paths = runPathsOf(jobDir, 0);
  const argv = qemuArgv(config, name, { index: 0, hostname: name, overlay, seed: { media: 'inject', path: overlay }, vcpus: 1, ramBytes: 512 * 2 ** 20 }, 'tcg', boot(dirname(guest)), paths);
  if (append !== undefined) argv[argv.indexOf('-append') + 1] = append;
  const pid = await startVm(config, account, argv, paths);
  t.teardown(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  handOverSockets(paths, account, { uid: 0, gid: 0 });
  const head = { bytes: Buffer.alloc(0) };
  const outcome = await waitReady({ config, account, paths, pid, until: Date.now() + waitSeconds * 1000, silence: { seconds: config.launch.console_silence, head } })
    .then(() => 'answered', (e: unknown) => e);
  return { outcome, head, tail: await consoleTail(paths, 100_000, head), config };
}

t.test('a VM booted through the firmware from a disk without a bootloader prints nothing, and is given up at console_silence', async (t) => {
  // No kernel: qemu boots the disk through SeaBIOS, which finds nothing to boot and, with -nodefaults, says so on no serial port.
  const { outcome, head, tail } = await bootAndWait(t, 'vsilent', () => ({ source: 'test: no kernel' }), undefined, 3 * SILENCE);
  t.ok(outcome instanceof VmBootError, String(outcome));
  t.equal((outcome as VmBootError).why, 'silent', `the wait ended for the silence, not at its end ([launch] boot): ${String(outcome)}`);
  t.equal(head.bytes.length, 0);
  t.same(tail, []);
  const fault = bootFault({ hostname: 'vsilent', seconds: SILENCE, accel: 'tcg', why: outcome as VmBootError, tail, silence: SILENCE });
  t.equal(fault.exitCode, 1, "the image's fault");
  t.equal(fault.message, `VM vsilent printed nothing on its console within ${SILENCE} s ([launch] console_silence, tcg) and was stopped`);
  t.equal(fault.problems[0]!.id, 'vm-silent');
  t.match(fault.problems[0]!.fix, /bootloader.*console=ttyS0.*doc\/guest-images\.md/);
});

t.test('a VM whose kernel writes to the console is not silent, however long it then takes; its first byte is kept for the tail', async (t) => {
  // The guest's kernel on ttyS0, then a panic (no init) that halts it for good (panic=0): it prints, then never answers.
  const { outcome, head, tail } = await bootAndWait(t, 'vtalks', (dir) => ({ kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), root: '/dev/vda', source: 'test' }),
    'console=ttyS0 rdinit=/nonexistent root=/dev/nonexistent panic=0', SILENCE + 30);
  t.ok(outcome instanceof VmBootError, String(outcome));
  t.equal((outcome as VmBootError).why, 'timeout', `waited to the end, not given up as silent: ${String(outcome)}`);
  t.equal(head.bytes.length, 1, 'the watch took one byte of the ring, and no more');
  t.match(tail[0], /^\[ *0\.0+\] Linux version /, `the tail starts with the console's first line, the byte the watch took included: ${tail[0]}`);
  t.ok(tail.some((l) => /Kernel panic/.test(l)), 'and goes on to its last');
});
