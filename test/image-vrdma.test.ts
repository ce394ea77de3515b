// The vRDMA guest rule: vTorque's vRDMA is HyV (zrlio/hyv), whose guest side
// is the virtio_hyv kernel module, a HyV provider module and libibverbs. An
// image without them is refused for vrdma=true jobs only; the verdict, shared
// by every job on the image, records what was found either way.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { evaluateRules, type Expectation } from '../src/image/rules.js';
import { kernelReleases, moduleFileFrom, newestKernel, type GuestFacts } from '../src/image/guestfs.js';
import { parseConfig } from '../src/config/load.js';
import { BIN, Mom } from './harness/mom.js';
import { compliantFacts } from './harness/guest-facts.js';

const config = parseConfig('', 'x').config;
const HYV = { kernels: ['6.1.0-25-amd64'], kernel: '6.1.0-25-amd64', modules: ['virtio_hyv', 'virtmlx4_ib'], verbs: ['/usr/lib/x86_64-linux-gnu/libibverbs.so.1'] };
const facts = compliantFacts;
const rule = (f: GuestFacts, want: Partial<Expectation>, c = config) => evaluateRules(f, { distro: null, arch: 'x86_64', ...want }, c).find((x) => x.id === 'vrdma-guest')!;

t.test('an image without the HyV guest side fails vrdma-guest only for a job that asks vrdma=true', async (t) => {
  const none = facts({ vrdma: { kernels: ['6.1.0-25-amd64'], kernel: '6.1.0-25-amd64', modules: [], verbs: [] } });
  const asked = rule(none, { vrdma: true });
  t.notOk(asked.ok);
  t.equal(asked.level, 'error');
  t.match(asked.message, /virtio_hyv/);
  t.match(asked.message, /vrdma=true/);
  t.match(asked.fix, /virtio_hyv/);
  for (const vrdma of [false, undefined]) {
    const r = rule(none, { vrdma });
    t.ok(r.ok, `vrdma=${vrdma}: not refused`);
    t.match(r.message, /only a job with vrdma=true is refused/);
  }
  const other = evaluateRules(none, { distro: null, arch: 'x86_64', vrdma: true }, config).filter((x) => !x.ok).map((x) => x.id);
  t.same(other, ['vrdma-guest'], 'the other rules do not care');
});

t.test('the driver, a provider and libibverbs are each required; what is missing is named', async (t) => {
  t.ok(rule(facts({ vrdma: HYV }), { vrdma: true }).ok);
  t.match(rule(facts({ vrdma: HYV }), { vrdma: true }).message, /virtio_hyv, virtmlx4_ib .*6\.1\.0-25-amd64/);
  const noProvider = rule(facts({ vrdma: { ...HYV, modules: ['virtio_hyv'] } }), { vrdma: true });
  t.notOk(noProvider.ok);
  t.match(noProvider.message, /no HyV provider module \(virtmlx4_ib, virtiw_cxgb4 or virtsiw2\)/);
  const noDriver = rule(facts({ vrdma: { ...HYV, modules: ['virtsiw2'] } }), { vrdma: true });
  t.notOk(noDriver.ok);
  t.match(noDriver.message, /no virtio_hyv/);
  const noVerbs = rule(facts({ vrdma: { ...HYV, verbs: [] } }), { vrdma: true });
  t.notOk(noVerbs.ok);
  t.match(noVerbs.message, /no libibverbs\.so\.1/);
  const noKernel = rule(facts({ vrdma: { kernels: [], modules: [], verbs: [] } }), { vrdma: true });
  t.notOk(noKernel.ok);
  t.match(noKernel.message, /no kernel modules under \/lib\/modules/);
});

t.test('the kernel probed is the newest one, the one the boot loader starts by default', async (t) => {
  t.equal(newestKernel(['5.10.0-30-amd64', '6.1.0-25-amd64', '6.1.0-9-amd64']), '6.1.0-25-amd64');
  t.equal(newestKernel(['4.18.0-553.el8_10.x86_64', '4.18.0-80.el8.x86_64']), '4.18.0-553.el8_10.x86_64');
  t.equal(newestKernel(['3.13.0-170-generic', '3.13.0-24-generic']), '3.13.0-170-generic');
  t.equal(newestKernel([]), undefined);
});

t.test('OSv builds vRDMA into its kernel: not visible in its files, so not refused', async (t) => {
  const r = rule(facts({ os: undefined, osv: true, exists: { '/usr/mgmt/cloud-init.so': true, '/workspace': true, '/home': true, '/opt-vm': true } }), { vrdma: true, distro: 'osv' });
  t.ok(r.ok);
  t.match(r.message, /OSv/);
});

t.test('a verdict without vRDMA facts is verified again before a vrdma=true job uses it', async (t) => {
  const r = rule(facts(), { vrdma: true });
  t.notOk(r.ok);
  t.match(r.fix, /verify the image again/);
  t.ok(rule(facts(), {}).ok);
});

t.test('[requirements] vrdma-guest = warn or off', async (t) => {
  const none = facts({ vrdma: { kernels: [], modules: [], verbs: [] } });
  t.equal(rule(none, { vrdma: true }, parseConfig('[requirements]\nvrdma-guest = warn\n', 'x').config).level, 'warn');
  t.equal(rule(none, { vrdma: true }, parseConfig('[requirements]\nvrdma-guest = off\n', 'x').config).level, 'off');
});

t.test('end to end: libguestfs finds the HyV guest side, and the prologue refuses vrdma=true on an image without it', async (t) => {
  const mom = new Mom({ pool: { 'debian12.qcow2': 'debian-ok.qcow2', 'rdma.qcow2': 'debian-vrdma.qcow2', 'stale.qcow2': 'debian-vrdma-stale.qcow2' } });
  // One appliance for the three images; the prologues below reuse the verdicts.
  const c = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'debian12.qcow2', 'rdma.qcow2', 'stale.qcow2', '--json'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  t.equal(c.status, 0, c.stderr);
  const results = JSON.parse(c.stdout || '[]') as { image: string; ok: boolean; rules?: { id: string; ok: boolean; message: string }[] }[];
  const msg = (img: string) => results.find((x) => x.image === img)?.rules?.find((x) => x.id === 'vrdma-guest');
  t.match(msg('rdma.qcow2'), { ok: true, message: /virtio_hyv, virtmlx4_ib in kernel 6\.1\.0-25-amd64.*libibverbs/ }, 'found in the newest kernel');
  t.match(msg('debian12.qcow2'), { ok: true, message: /no kernel modules under \/lib\/modules.*only a job with vrdma=true is refused/ });
  t.match(msg('stale.qcow2'), { ok: true, message: /no virtio_hyv .*6\.1\.0-25-amd64/ }, 'an older kernel with the modules does not count');

  const bad = await mom.prologue({ id: '61.srv', name: 'rdma', script: '#!/bin/sh\n#VM img=debian12.qcow2,vrdma=true\necho\n' });
  t.equal(bad.code, 1, bad.er);
  t.match(bad.er, /vtorque: .*image debian12\.qcow2: fails vrdma-guest: .*vrdma=true.*Fix: .*virtio_hyv/);
  t.match(readFileSync(join(mom.workdir, 'rdma.e61'), 'utf8'), /fails vrdma-guest/);
  const stale = await mom.prologue({ id: '62.srv', script: '#VM img=stale.qcow2,vrdma=true\n' });
  t.equal(stale.code, 1, stale.er);
  t.match(stale.er, /fails vrdma-guest/);

  const plain = await mom.prologue({ id: '63.srv', script: '#VM img=debian12.qcow2,vrdma=false\n' });
  t.equal(plain.code, 0, plain.er);
  const good = await mom.prologue({ id: '64.srv', script: '#VM img=rdma.qcow2,vrdma=true\n' });
  t.equal(good.code, 0, good.er);
  const m = JSON.parse(readFileSync(join(mom.jobDir, '64.srv', 'manifest.json'), 'utf8'));
  t.equal(m.request.vrdma, true);
  t.notOk(mom.logLines().filter((l) => l.msg === 'inspecting images with libguestfs').length > 1, 'one libguestfs launch for all of it');
});

t.test('kernel and module names from a hostile image cannot become guestfish commands or reach outside the kernel tree', async (t) => {
  // A file name may hold a newline, a blank, quotes or "!", which starts a host shell command in guestfish.
  const glob = '/lib/modules/6.1.0-25-amd64/modules.dep\n/lib/modules/x\n!touch /tmp/pwned\n/lib/modules/a b/modules.dep\n/lib/modules/"q"/modules.dep\n/lib/modules/../../etc/modules.dep\n';
  t.same(kernelReleases(glob), ['6.1.0-25-amd64']);
  t.equal(moduleFileFrom('updates/dkms/virtio_hyv.ko: kernel/ib_core.ko\n'), 'updates/dkms/virtio_hyv.ko');
  t.equal(moduleFileFrom('/lib/modules/3.13.0/extra/virtio_hyv.ko:\n'), '/lib/modules/3.13.0/extra/virtio_hyv.ko');
  t.equal(moduleFileFrom('extra/x y/virtio_hyv.ko:\n'), undefined);
  t.equal(moduleFileFrom('../../../proc/self/virtio_hyv.ko:\n'), undefined);
  t.equal(moduleFileFrom('extra/"/virtio_hyv.ko:\nupdates/virtio_hyv.ko:\n'), 'updates/virtio_hyv.ko');
  t.equal(moduleFileFrom(''), undefined);
});
