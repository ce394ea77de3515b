// [launch] network = user: a job's VMs on one node reach each other by host
// name over the job's private segment (eth1, 10.254.0.<index+1>), while their
// first NIC stays qemu's user-mode NAT. The boot test runs the real Debian boot
// guest under TCG (two VMs: slow, so one job does it all); the argv tests
// show the star around VM 0 for more VMs, and that no other account can reach
// the segment's sockets.
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Mom, lookupUser } from './harness/mom.js';
import { bootGuestImage, ensureLaunchUser, qemusOf } from './harness/launch-user.js';
import { SEED_USER, ensureSeedUser } from './harness/seed-user.js';
import { parseConfig } from '../src/config/load.js';
import { makeTaps, qemuArgv, resolveLaunchAccount, runPathsOf, segmentSocket, tapName } from '../src/launch/qemu.js';

t.setTimeout(1800_000);


t.test('qemu argv: VM 0 holds the hub, every other VM is one unix datagram link to it, all in run/', async (t) => {
  const { config } = parseConfig('[launch]\naccel = tcg\n', 'test.ini');
  const paths = (i: number) => runPathsOf('/j/1.head', i);
  const spec = (i: number) => ({ index: i, hostname: `vn-${i}`, overlay: `/j/1.head/vm-${i}/disk.qcow2`, seed: { media: 'iso' as const, path: '/j/s.iso', mac: '02:00:00:00:00:0' + i }, vcpus: 1, ramBytes: 2 ** 29, segment: { mac: `02:aa:00:00:00:0${i}`, count: 3 } });
  const boot = { source: 'none' } as never;
  const a0 = qemuArgv(config, '1.head', spec(0), 'tcg', boot, paths(0)).join(' ');
  const a2 = qemuArgv(config, '1.head', spec(2), 'tcg', boot, paths(2)).join(' ');
  t.match(a0, '-netdev hubport,id=seg,hubid=0 -device virtio-net-pci,netdev=seg,mac=02:aa:00:00:00:00');
  for (const j of [1, 2]) {
    t.match(a0, `-netdev dgram,id=seg${j},local.type=unix,local.path=${segmentSocket('/j/1.head/run', 0, j)},remote.type=unix,remote.path=${segmentSocket('/j/1.head/run', j, 0)} -netdev hubport,id=hub${j},hubid=0,netdev=seg${j}`);
  }
  t.match(a2, `-netdev dgram,id=seg,local.type=unix,local.path=/j/1.head/run/seg-2-0,remote.type=unix,remote.path=/j/1.head/run/seg-0-2 -device virtio-net-pci,netdev=seg,mac=02:aa:00:00:00:02`);
  t.notMatch(a2, 'hubport', 'only VM 0 has a hub: a hub in every VM would loop frames');
  const netdevs = (a: string[]) => a.flatMap((x, i) => (a[i - 1] === '-netdev' ? [x] : []));
  const nd = [...netdevs(qemuArgv(config, '1.head', spec(0), 'tcg', boot, paths(0))), ...netdevs(qemuArgv(config, '1.head', spec(1), 'tcg', boot, paths(1)))];
  t.equal(nd.length, 6, 'VM 0: its hub port and a link and hub port per peer; VM 1: one link');
  for (const n of nd) t.match(n, /^(?:hubport|dgram),/, n);
  for (const n of nd) t.notMatch(n, /inet|udp|mcast|listen|connect|fd=/, 'no TCP or UDP port, no multicast group: nothing another local account could reach');
  const single = qemuArgv(config, '1.head', { ...spec(0), segment: undefined }, 'tcg', boot, paths(0)).join(' ');
  t.notMatch(single, 'seg', 'no segment without a peer');
});

t.test('two VMs of a job on one node reach each other by host name on their private segment', async (t) => {
  const guest = bootGuestImage();
  ensureSeedUser();
  const OWNER = lookupUser(SEED_USER.name);
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: '[launch]\nstart = true\naccel = tcg\nboot = 900\n[timeouts]\ntotal = 1500\n[seed]\nssh_keys_from =\n' });
  const job = {
    id: `${process.pid}3.head`,
    name: 'net',
    user: OWNER,
    script: [
      '#!/bin/bash',
      '#PBS -l nodes=1',
      '#VM img=boot-guest.qcow2,ram=512M,vcpus=1,vms_per_node=2',
      'echo "nodes=$(tr "\\n" " " < "$PBS_VM_NODEFILE")"',
      'echo "peer=$(getent hosts vnode01-1)"',
      'echo "eth1=$(ip -4 -o addr show dev eth1 | awk \'{print $4}\')"',
      // Nothing listens on port 9 in VM 1: its kernel answers the SYN with a RST, so
      // "Connection refused" proves the segment carried both ways (no answer would time out).
      'timeout 20 bash -c \'exec 3<>/dev/tcp/vnode01-1/9\' 2>&1 | sed "s/^/tcp: /"',
      'echo "neigh=$(ip neigh show 10.254.0.2 dev eth1)"',
      'exit 0',
      '',
    ].join('\n'),
  };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const p = await mom.prologue(job, { alarm: 1600 });
  t.equal(p.code, 0, p.er);
  t.comment(p.ou);

  const run = join(mom.jobDir, job.id, 'run');
  const st = statSync(run);
  t.equal(st.mode & 0o777, 0o700, 'run/, where the segment\'s sockets are, is the launch account\'s alone');
  for (const name of ['seg-0-1', 'seg-1-0']) t.ok(existsSync(join(run, name)) && statSync(join(run, name)).isSocket(), `${name} is a socket in run/`);

  const r = await mom.startJob(job);
  t.comment(`job .OU:\n${r.ou}\njob .ER:\n${r.er}`);
  t.equal(r.code, 0, r.er);
  t.match(r.ou, /^nodes=vnode01-0 vnode01-1 $/m);
  t.match(r.ou, /^peer=10\.254\.0\.2\s+vnode01-1$/m, 'VM 1\'s host name resolves to its segment address');
  t.match(r.ou, /^eth1=10\.254\.0\.1\/24$/m, 'VM 0\'s second NIC has its segment address');
  t.match(r.ou, /^tcp: .*Connection refused$/m, 'VM 1 answered VM 0 over the segment');
  t.match(r.ou, /^neigh=10\.254\.0\.2 lladdr [0-9a-f:]+ (REACHABLE|STALE|DELAY)/m);

  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.same(qemusOf(job.id), [], 'no qemu left');
});

// network = bridge, on a bridge made here (no DHCP server on it, and no need:
// what is tested is the tap, not the guest's address).
const BRIDGE = `vtbr${process.pid % 100000}`;
const BRIDGE_INI = `[launch]\nstart = true\naccel = tcg\nnetwork = bridge\nbridge = ${BRIDGE}\nboot = 5\n[seed]\nssh_keys_from =\n`;

function tapState(name: string): { owner: number; master: string; up: boolean } | undefined {
  try {
    return {
      owner: Number(readFileSync(`/sys/class/net/${name}/owner`, 'utf8').trim()),
      master: readlinkSync(`/sys/class/net/${name}/master`).split('/').pop()!,
      up: (Number(readFileSync(`/sys/class/net/${name}/flags`, 'utf8').trim()) & 1) === 1,
    };
  } catch {
    return undefined;
  }
}

t.test('network = bridge: a tap per VM, the launch account\'s, on the bridge; qemu attaches to it; none outlives the job', async (t) => {
  execFileSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
  t.teardown(() => { try { execFileSync('ip', ['link', 'del', BRIDGE]); } catch { /* gone */ } });
  const launch = ensureLaunchUser();
  const guest = bootGuestImage();
  const mom = new Mom({ pool: { 'boot-guest.qcow2': guest }, ini: BRIDGE_INI });
  const job = { id: `${process.pid}4.head`, script: '#!/bin/bash\n#VM img=boot-guest.qcow2,ram=256M,vcpus=1,vms_per_node=2\ntrue\n' };
  t.teardown(() => { for (const p of qemusOf(job.id)) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } });
  const taps = [0, 1].map((i) => tapName(job.id, i));
  t.teardown(() => { for (const n of taps) try { execFileSync('ip', ['link', 'del', n], { stdio: 'ignore' }); } catch { /* gone, as it should be */ } });
  t.ok(taps.every((n) => n.length <= 15 && /^vt[0-9a-f]+$/.test(n)), `tap names fit IFNAMSIZ: ${taps.join(' ')}`);
  const seen = new Map<string, NonNullable<ReturnType<typeof tapState>>>();
  let done = false;
  const p = mom.prologue(job).finally(() => { done = true; });
  while (!done) {
    for (const n of taps) { const s = tapState(n); if (s && !seen.has(n)) seen.set(n, s); }
    const qemuArgs = qemusOf(job.id).map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
    if (qemuArgs.length > 0) for (const n of taps) if (qemuArgs.some((a) => a.includes(`tap,ifname=${n},script=no,downscript=no`))) seen.set(`qemu ${n}`, seen.get(n)!);
    await new Promise((r) => setTimeout(r, 100));
  }
  const r = await p;
  for (const n of taps) {
    t.same(seen.get(n), { owner: launch.uid, master: BRIDGE, up: true }, `${n}: owned by the launch account, in ${BRIDGE}, up`);
    t.ok(seen.has(`qemu ${n}`), `a qemu of the job runs on ${n}`);
  }
  // boot = 5: the guest cannot answer in time. That is the job's failure (exit 1,
  // vm-boot), not the node's: qemu opened its tap as the launch account.
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vm-boot|did not answer/);
  t.same(taps.filter((n) => existsSync(`/sys/class/net/${n}`)), [], 'the failed prologue removed its taps');
  t.same(qemusOf(job.id), [], 'and its qemus');

  // The epilogue's part: taps of a job that ran (so its job directory is there:
  // the epilogue of a job without one returns before loading anything).
  mkdirSync(join(mom.jobDir, job.id), { mode: 0o751 });
  const { config } = parseConfig(BRIDGE_INI, 'test.ini');
  const made = await makeTaps(config, job.id, 2, await resolveLaunchAccount(config));
  t.same(made, taps);
  await t.rejects(makeTaps(config, job.id, 1, await resolveLaunchAccount(config)), /already exists/, 'a tap of that name is never reused');
  const e = await mom.run('epilogue', job);
  t.equal(e.code, 0, e.er);
  t.same(taps.filter((n) => existsSync(`/sys/class/net/${n}`)), [], 'the epilogue removed the job\'s taps');
});
