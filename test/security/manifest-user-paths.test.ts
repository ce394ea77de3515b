// Finding 6: disk=, vm_prologue= and vm_epilogue= name the user's files.
// Checked only for their characters, they would land as they are in the
// root-written manifest.json, where a VM launcher could take /dev/sda or
// ../../../../etc/shadow as vetted. disk= is refused everywhere a request is
// read, as nothing reads it as the user yet. vm_prologue= and vm_epilogue= are
// read by the job starter, which runs as the job owner: the kernel judges the
// path with the owner's rights, and root never opens it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, Mom, NOBODY } from '../harness/mom.js';

const DISK = 'disk=/dev/sda';
const SCRIPT_PATHS = ['vm_prologue=../../../../etc/shadow', 'vm_epilogue=/etc/shadow'];

t.test('a #VM line naming a host device as disk= cannot reach the manifest', async (t) => {
  const m = new Mom();
  const id = '61.head';
  const r = await m.prologue({ id, script: `#!/bin/sh\n#VM img=debian12.qcow2\n#VM ${DISK}\necho\n` });
  t.equal(r.code, 1, `the job's fault\n${r.er}`);
  t.match(r.er, /disk/, 'names the key');
  t.match(r.er, /not supported/, 'says why');
  t.match(r.er, /Fix: /);
  t.notOk(existsSync(join(m.jobDir, id)), 'no job directory, so no manifest');
});

/** A stand-in for VM 0's agent socket in the job's directory: records whether anyone spoke to it. */
async function fakeAgent(m: Mom, id: string): Promise<{ bytes: () => number; close: () => void }> {
  const dir = join(m.jobDir, id);
  mkdirSync(dir, { recursive: true });
  let n = 0;
  const conns: Socket[] = [];
  // Hangs up on the first byte: a starter that speaks to it must not wait for a VM that is not there.
  const srv = createServer((c) => { conns.push(c); c.on('data', (b) => { n += b.length; c.destroy(); }); });
  const path = join(dir, 'vm-0.agent');
  await new Promise<void>((r) => srv.listen(path, r));
  chmodSync(path, 0o777);
  return { bytes: () => n, close: () => { for (const c of conns) c.destroy(); srv.close(); } };
}

t.test('vm_prologue=/etc/shadow: root never opens it; the starter, as the user, cannot read it and runs nothing', async (t) => {
  const m = new Mom();
  for (const [i, item] of SCRIPT_PATHS.entries()) {
    const id = `${63 + i}.head`;
    const job = { id, script: `#!/bin/sh\n#VM img=debian12.qcow2\n#VM ${item}\necho job-ran\n` };
    const p = await m.prologue(job);
    t.equal(p.code, 0, `${item}: the prologue accepts it (it opens no user path)\n${p.er}`);
    const agent = await fakeAgent(m, id);
    const r = await m.startJob(job);
    agent.close();
    t.equal(r.code, 66, `${item}: the starter stops with EX_NOINPUT\n${r.er}`);
    t.match(r.er, /^vtorque: job [^ ]+: (vm_prologue|vm_epilogue)=[^ ]*shadow \(line 3\) cannot be read: .*permission denied.*Fix: /m, `${item}: said as the user's own error`);
    t.notMatch(r.er + r.ou, /root:/, `${item}: not a byte of /etc/shadow in the job's output`);
    t.equal(agent.bytes(), 0, `${item}: nothing was sent to the VM`);
  }
});

t.test('a FIFO or a symlink as vm_prologue is refused by the starter without hanging', async (t) => {
  const m = new Mom();
  const fifo = join(m.workdir, 'fifo.sh');
  spawnSync('mkfifo', [fifo]);
  spawnSync('chown', [`${NOBODY.uid}:${NOBODY.gid}`, fifo]);
  spawnSync('ln', ['-s', '/etc/passwd', join(m.workdir, 'link.sh')]);
  for (const [i, [item, why]] of ([['vm_prologue=fifo.sh', /is not a regular file/], ['vm_epilogue=link.sh', /is a symbolic link/]] as const).entries()) {
    const id = `${66 + i}.head`;
    const job = { id, script: `#!/bin/sh\n#VM img=debian12.qcow2,${item}\necho job-ran\n` };
    const p = await m.prologue(job);
    t.equal(p.code, 0, p.er);
    const agent = await fakeAgent(m, id);
    const r = await m.startJob(job);
    agent.close();
    t.equal(r.code, 66, r.er);
    t.match(r.er, why, item);
    t.equal(agent.bytes(), 0, `${item}: nothing was sent to the VM`);
  }
});

t.test('the same disk= through VTORQUE_REQUEST or VM_ variables on a sister is refused too', async (t) => {
  const m = new Mom();
  writeFileSync(m.configFile, readFileSync(m.configFile, 'utf8').replace('node_name = node01', 'node_name = node02'));
  const lists = ['VTORQUE_REQUEST=v1:disk=/dev/sda', 'VM_DISK=/dev/sda'];
  for (const [i, vl] of lists.entries()) {
    const id = `${68 + i}.head`;
    mkdirSync(join(m.torqueHome, 'aux'), { recursive: true });
    writeFileSync(join(m.torqueHome, 'aux', id), 'node01\nnode02\n');
    m.submit({ id, qstat: { Variable_List: `PBS_O_HOME=/nonexistent,${vl}`, exec_host: 'node01/0+node02/0', start_count: '1' } });
    const r = await m.run('prologue.parallel', { id });
    t.equal(r.code, 1, `${vl}: the job's fault\n${r.er}`);
    t.match(r.er, /not supported/, vl);
    t.notOk(existsSync(join(m.jobDir, id)), `${vl}: no job directory, so no manifest`);
    t.equal(m.nodeState('node02').state, 'free', `${vl}: the sister stays up`);
  }
});

t.test('check --job and the submit filter refuse disk= before the job is queued, and take vm_prologue=/vm_epilogue=', async (t) => {
  const d = mkdtempSync(join(tmpdir(), 'vtorque-paths-'));
  const ini = join(d, 'p.ini');
  // A pool of its own (absent: the request alone is checked), whatever this machine has in the default one.
  writeFileSync(ini, `[paths]\nimage_pool = ${join(d, 'no-pool')}\n`);
  const script = join(d, 'job.sh');
  for (const item of [DISK, ...SCRIPT_PATHS]) {
    const refused = item === DISK;
    writeFileSync(script, `#!/bin/sh\n#VM ${item}\necho\n`);
    const chk = spawnSync(process.execPath, [BIN, '--config', ini, 'check', '--job', script], { encoding: 'utf8' });
    t.equal(chk.status, refused ? 1 : 0, `check --job ${item}: ${chk.stdout}${chk.stderr}`);
    if (refused) t.match(chk.stdout, /disk.*not supported/);
    const sub = spawnSync(process.execPath, [BIN, '--config', ini, 'submit-filter'], { input: `#!/bin/sh\n#VM ${item}\necho\n`, encoding: 'utf8' });
    if (refused) {
      t.not(sub.status, 0, `submit-filter ${item}: refused`);
      t.match(sub.stderr, /not supported/, `submit-filter ${item}: ${sub.stderr}`);
    } else t.equal(sub.status, 0, `submit-filter ${item}: passed on\n${sub.stderr}`);
  }
});

t.test('metadata= stays: it is read as the user, never by root', async (t) => {
  const d = mkdtempSync(join(tmpdir(), 'vtorque-paths-'));
  const ini = join(d, 'p.ini');
  // A pool of its own (absent: the request alone is checked), whatever this machine has in the default one.
  writeFileSync(ini, `[paths]\nimage_pool = ${join(d, 'no-pool')}\n`);
  const script = join(d, 'job.sh');
  writeFileSync(script, '#!/bin/sh\n#VM metadata=cc.yaml\necho\n');
  const chk = spawnSync(process.execPath, [BIN, '--config', ini, 'check', '--job', script], { encoding: 'utf8' });
  t.equal(chk.status, 0, chk.stdout + chk.stderr);
});
