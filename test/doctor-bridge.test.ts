// doctor's launch check in [launch] network = bridge: the bridge must exist on
// the node (a real one, made here with ip link) and [tools] ip must be there,
// or every VM job would fail at its prologue with a node fault.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { BIN, Mom } from './harness/mom.js';

const BRIDGE = `vtdbr${process.pid % 10000}`;

function doctor(mom: Mom) {
  const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'doctor', '--skip', 'guestfs,kvm'], { encoding: 'utf8', timeout: 300_000 });
  return r.stdout.split('\n').filter((l) => l.slice(6).startsWith('launch '));
}

t.test('a bridge that is not on the node fails the launch check, with the command that makes it', async (t) => {
  const mom = new Mom({ ini: `[launch]\nnetwork = bridge\nbridge = ${BRIDGE}\n` });
  const lines = doctor(mom);
  t.ok(lines.some((l) => l.startsWith('FAIL') && l.includes(`[launch] bridge ${BRIDGE} is not a bridge on this node`) && l.includes(`ip link add ${BRIDGE} type bridge`)), lines.join('\n'));
});

t.test('a missing [tools] ip fails it; a real bridge and ip pass', async (t) => {
  const add = spawnSync('/usr/sbin/ip', ['link', 'add', BRIDGE, 'type', 'bridge'], { encoding: 'utf8' });
  t.equal(add.status, 0, add.stderr);
  t.teardown(() => { spawnSync('/usr/sbin/ip', ['link', 'del', BRIDGE]); });
  const noIp = doctor(new Mom({ ini: `[launch]\nnetwork = bridge\nbridge = ${BRIDGE}\n[tools]\nip = /nonexistent/ip\n` }));
  t.ok(noIp.some((l) => l.startsWith('FAIL') && l.includes('/nonexistent/ip ([tools] ip) is not installed')), noIp.join('\n'));
  const ok = doctor(new Mom({ ini: `[launch]\nnetwork = bridge\nbridge = ${BRIDGE}\n` }));
  t.ok(ok.some((l) => l.startsWith('ok') && l.includes(`bridge ${BRIDGE} is there`)), ok.join('\n'));
  t.notOk(ok.some((l) => /bridge/.test(l) && l.startsWith('FAIL')), ok.join('\n'));
});
