// A guest that floods its serial console must not fill the node's disk: the
// console is qemu's ringbuf chardev (CONSOLE_RING bytes in qemu's memory, the
// oldest dropped), not a file under <job_dir>, and root reads its tail through
// QMP. The real Debian boot guest (scripts/build-boot-guest), under TCG, as
// the launch account, with qemu's command line from qemuArgv.
import t from 'tap';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import { CONSOLE_RING, consoleTail, handOverSockets, makeRunDir, qemuArgv, qmpCommand, qemuPid, resolveLaunchAccount, runPathsOf, startVm } from '../src/launch/qemu.js';
import { bootGuestImage, bootGuestOverlay, ensureLaunchUser } from './harness/launch-user.js';

t.setTimeout(1800_000);

t.test('qemu keeps the serial console in a 1 MiB ring in its memory, never in a file', async (t) => {
  const config = parseConfig('', 'x').config;
  const argv = qemuArgv(config, '1.head', { index: 0, hostname: 'v', overlay: '/j/vm-0/disk.qcow2', seed: { media: 'inject', path: '/j/vm-0/disk.qcow2' }, vcpus: 1, ramBytes: 2 ** 30 }, 'tcg', { source: 'x' }, runPathsOf('/j/1.head', 0));
  const i = argv.indexOf('-chardev');
  t.equal(argv[i + 1], `ringbuf,id=con,size=${CONSOLE_RING}`);
  t.equal(argv[argv.indexOf('-serial') + 1], 'chardev:con');
  t.equal(CONSOLE_RING & (CONSOLE_RING - 1), 0, "a power of two, as qemu's ringbuf requires");
  t.notOk(argv.some((a) => /^file,|console/.test(a)), 'no console file');
});

/** The boot guest, a TCG launch config, the launch account and a job directory of the test's own. */
async function consoleNode(t: { teardown: (fn: () => void) => void }) {
  ensureLaunchUser();
  const guest = bootGuestImage();
  const dir = dirname(guest);
  const config = parseConfig('[launch]\nstart = true\naccel = tcg\n', 'x').config;
  const account = await resolveLaunchAccount(config);
  const jobDir = mkdtempSync(join(tmpdir(), 'vtorque-console-'));
  chmodSync(jobDir, 0o755);
  t.teardown(() => rmSync(jobDir, { recursive: true, force: true }));
  return { guest, dir, config, account, jobDir };
}

t.test('a guest that writes 3 MB to its console leaves nothing on disk, and root reads the last of it', async (t) => {
  const { guest, dir, config, account, jobDir } = await consoleNode(t);
  const overlay = bootGuestOverlay(jobDir, guest, account);
  makeRunDir(jobDir, account);
  const paths = runPathsOf(jobDir, 0);
  const argv = qemuArgv(config, 'console-flood', { index: 0, hostname: 'vflood', overlay, seed: { media: 'inject', path: overlay }, vcpus: 1, ramBytes: 512 * 2 ** 20 }, 'tcg',
    { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), root: '/dev/vda', source: 'test' }, paths);
  // The guest's init: 3 MB of lines to the console (three times the ring), a marker, then power off.
  // -no-shutdown keeps qemu (and so its ring) after the guest powered off, so the test can see the end without reading the ring.
  const a = argv.indexOf('-append');
  argv[a + 1] = `${argv[a + 1]} init=/bin/sh -- -c "yes flood-flood-flood-flood-flood-flood | head -c 3000000; echo END-OF-FLOOD; echo o > /proc/sysrq-trigger; sleep 600"`;
  argv.push('-no-shutdown');
  const pid = await startVm(config, account, argv, paths);
  t.teardown(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  handOverSockets(paths, account, { uid: 0, gid: 0 });

  let status: unknown;
  for (let i = 0; i < 900; i++) {
    status = ((await qmpCommand(paths.qmp, 'query-status', undefined, 10_000)) as { status?: string } | undefined)?.status;
    if (status === 'shutdown' || qemuPid(config, paths.pidFile, account) === undefined) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  t.equal(status, 'shutdown', 'the guest wrote its flood and powered off');
  const files = readdirSync(paths.runDir).map((f) => ({ f, size: statSync(join(paths.runDir, f)).size }));
  t.ok(files.every((x) => x.size < 64 * 1024), `nothing the size of the flood in run/: ${JSON.stringify(files)}`);
  const ring = (await qmpCommand(paths.qmp, 'ringbuf-read', { device: 'con', size: 8 * CONSOLE_RING, format: 'base64' }, 10_000)) as string;
  const bytes = Buffer.from(ring, 'base64');
  t.ok(bytes.length <= CONSOLE_RING, `qemu kept at most the ring: ${bytes.length} bytes of 3 MB written`);
  t.ok(bytes.length > CONSOLE_RING / 2, 'and the ring was full');
  t.notMatch(bytes.toString('latin1'), /Linux version/, "the boot's first lines were dropped, the oldest first");
  t.match(bytes.toString('latin1'), /END-OF-FLOOD/, 'the last lines are there');
  t.same(await consoleTail(paths), [], 'ringbuf-read empties the ring: the tail read after it is empty');
});

t.test("consoleTail: the ring's last lines, as the boot failure report shows them", async (t) => {
  const { dir, config, account, jobDir } = await consoleNode(t);
  makeRunDir(jobDir, account);
  const paths = runPathsOf(jobDir, 0);
  // No disk, no init: the kernel panics, prints its last lines and, with panic=0, stays halted.
  const argv = qemuArgv(config, 'console-tail', { index: 0, hostname: 'vtail', overlay: '/dev/null', seed: { media: 'inject', path: '/dev/null' }, vcpus: 1, ramBytes: 256 * 2 ** 20 }, 'tcg',
    { kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img'), root: '/dev/nonexistent', source: 'test' }, paths).filter((x, i, all) => !(x === '-drive' || all[i - 1] === '-drive'));
  const a = argv.indexOf('-append');
  argv[a + 1] = 'console=ttyS0 rdinit=/nonexistent root=/dev/nonexistent panic=0';
  const pid = await startVm(config, account, argv, paths);
  t.teardown(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  handOverSockets(paths, account, { uid: 0, gid: 0 });
  let tail: string[] = [];
  for (let i = 0; i < 600 && !tail.some((l) => /Kernel panic/.test(l)); i++) {
    tail = [...tail, ...(await consoleTail(paths))].slice(-20);
    await new Promise((r) => setTimeout(r, 1000));
  }
  t.ok(tail.some((l) => /Kernel panic/.test(l)), `the panic is among the last lines: ${tail.join(' | ')}`);
  t.ok(tail.length <= 20);
});
