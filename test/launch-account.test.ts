// The launch account as qemu gets it: its uid, its group and its supplementary
// groups (the kvm group, where /dev/kvm lives), never root's, and no way to
// gain privileges through a setuid program. Real setpriv, real NSS.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { parseConfig } from '../src/config/load.js';
import { asLaunchAccount, resolveLaunchAccount } from '../src/launch/qemu.js';
import { runTool } from '../src/tools/run.js';
import { ensureLaunchUser, LAUNCH_NAME } from './harness/launch-user.js';

const GROUP = 'vtorque-kvmtest';

t.test('a program started as the launch account keeps its supplementary groups and gets no_new_privs', async (t) => {
  const launch = ensureLaunchUser();
  // A supplementary group of the account's, as install.sh makes kvm one (usermod -aG kvm).
  if (spawnSync('getent', ['group', GROUP]).status !== 0) spawnSync('groupadd', ['--system', GROUP]);
  const added = spawnSync('gpasswd', ['-a', LAUNCH_NAME, GROUP], { encoding: 'utf8' });
  t.equal(added.status, 0, added.stderr);
  t.teardown(() => { spawnSync('gpasswd', ['-d', LAUNCH_NAME, GROUP]); });
  const gid = Number(spawnSync('getent', ['group', GROUP], { encoding: 'utf8' }).stdout.split(':')[2]);

  const { config } = parseConfig('', 'test.ini');
  const account = await resolveLaunchAccount(config);
  t.equal(account.uid, launch.uid);
  t.ok(account.groups.includes(gid), `NSS gives the account its supplementary group ${GROUP} (${account.groups.join(',')})`);

  const r = await runTool(...asLaunchAccount(config, account, '/bin/sh', ['-c', 'id -u; id -g; id -G; grep NoNewPrivs /proc/self/status']), { timeout: 10_000 });
  const [uid, primary, all, nnp] = r.stdout.trim().split('\n');
  t.equal(Number(uid), launch.uid, 'runs as the launch account');
  t.equal(Number(primary), launch.gid, 'with its group');
  t.ok(all!.split(' ').map(Number).includes(gid), `with its supplementary group (id -G: ${all})`);
  t.notOk(all!.split(' ').map(Number).includes(0), 'never root\'s group');
  t.match(nnp, /NoNewPrivs:\s+1/, 'no_new_privs');
});
