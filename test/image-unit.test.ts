// Format headers, datasource precedence and authorisation, without launching
// libguestfs (accel detection: test/kvm-probe.test.ts).
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseHeader } from '../src/image/header.js';
import { evaluateRules } from '../src/image/rules.js';
import { effectiveDatasources } from '../src/image/datasources.js';
import { compliantFacts } from './harness/guest-facts.js';
import { authoriseImage } from '../src/image/authorise.js';
import { readVerdict } from '../src/image/verdicts.js';
import { parseConfig } from '../src/config/load.js';
import { JobFault } from '../src/core/errors.js';
import { NOBODY } from './harness/mom.js';

function qcow2({ version = 3, backing = 0n, crypt = 0, incompatible = 0n } = {}): Buffer {
  const b = Buffer.alloc(512);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(version, 4);
  b.writeBigUInt64BE(backing, 8);
  b.writeUInt32BE(backing ? 11 : 0, 16);
  b.writeUInt32BE(crypt, 32);
  b.writeBigUInt64BE(incompatible, 72);
  return b;
}
const noIso = Buffer.alloc(5);

t.test('qcow2 header fields that make qemu read other files are found in the bytes', async (t) => {
  t.equal(parseHeader(qcow2(), noIso, 1).qcow2!.backingFileOffset, 0);
  t.equal(parseHeader(qcow2({ backing: 0x200n }), noIso, 1).qcow2!.backingFileOffset, 0x200);
  t.ok(parseHeader(qcow2({ incompatible: 0b100n }), noIso, 1).qcow2!.externalDataFile);
  t.equal(parseHeader(qcow2({ incompatible: 1n << 40n }), noIso, 1).qcow2!.unknownIncompatible, 1n << 40n);
  t.ok(parseHeader(qcow2({ incompatible: 0b10n }), noIso, 1).qcow2!.corruptBit);
  t.equal(parseHeader(qcow2({ crypt: 1 }), noIso, 1).qcow2!.cryptMethod, 1);
});

t.test('QED, VMDK, LUKS, ISO and raw are told apart', async (t) => {
  t.equal(parseHeader(Buffer.from('QED\0xxxxxxxx'), noIso, 1).format, 'qed');
  t.equal(parseHeader(Buffer.from('KDMVxxxxxxxx'), noIso, 1).format, 'vmdk');
  t.equal(parseHeader(Buffer.from('# Disk DescriptorFile\nversion=1'), noIso, 1).format, 'vmdk');
  t.equal(parseHeader(Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe, 0, 1]), noIso, 1).format, 'luks');
  t.equal(parseHeader(Buffer.alloc(512), Buffer.from('CD001'), 1).format, 'iso');
  t.equal(parseHeader(Buffer.alloc(512), noIso, 1).format, 'raw');
});

const facts = compliantFacts;
const config = parseConfig('', 'x').config;

t.test('datasource_list: cloud.cfg, then cloud.cfg.d in order, the last one set wins', async (t) => {
  const f = facts({
    cloudCfg: 'datasource_list: [ NoCloud, None ]\n',
    cloudCfgD: [{ name: '/etc/cloud/cloud.cfg.d/10-a.cfg', text: 'datasource_list: [ Ec2 ]\n' }, { name: '/etc/cloud/cloud.cfg.d/20-b.cfg', text: 'foo: 1\n' }],
  });
  t.same(effectiveDatasources(f).list, ['Ec2']);
  t.equal(effectiveDatasources(f).from, '/etc/cloud/cloud.cfg.d/10-a.cfg');
  const r = evaluateRules(f, { distro: 'debian', arch: 'x86_64' }, config).find((x) => x.id === 'nocloud-enabled')!;
  t.notOk(r.ok);
  t.match(r.message, /10-a\.cfg is \["Ec2"\], without NoCloud/);
  t.ok(evaluateRules(facts(), { distro: null, arch: 'x86_64' }, config).find((x) => x.id === 'nocloud-enabled')!.ok, 'no list: not restricted');
  const broken = evaluateRules(facts({ cloudCfg: 'datasource_list: [ NoCloud\n' }), { distro: null, arch: 'x86_64' }, config).find((x) => x.id === 'nocloud-enabled')!;
  t.notOk(broken.ok);
  t.match(broken.message, /not valid YAML/);
});

t.test('every failed rule is reported, each with a fix, and guest strings are quoted', async (t) => {
  const f = facts({ exists: {}, cloudInitModule: false, optEntries: ['intel', 'x\u001b[2J'], useradd: 'HOME=/users\n', os: { type: 'linux', distro: 'rocky', arch: 'aarch64', major: '9', product: '', root: '/dev/sda' } });
  const r = evaluateRules(f, { distro: 'debian', arch: 'x86_64' }, config);
  const failed = r.filter((x) => !x.ok).map((x) => x.id);
  t.same(failed, ['distro-match', 'arch-match', 'cloud-init-installed', 'workspace-dir', 'home-default', 'opt-unused', 'opt-vm-present']);
  for (const x of r.filter((y) => !y.ok)) t.ok(x.fix && x.fix.length > 10, `${x.id} has a fix`);
  t.match(r.find((x) => x.id === 'opt-unused')!.message, /"x\\u001b\[2J"/);
});

t.test('bootable: a kernel we boot directly, or a BIOS bootloader; neither fails with the fix for image builders', async (t) => {
  const want = { distro: null, arch: 'x86_64' };
  const bootable = (over: Parameters<typeof facts>[0]) => evaluateRules(facts(over), want, config).find((x) => x.id === 'bootable')!;
  const direct = bootable({});
  t.ok(direct.ok);
  t.match(direct.message, /^direct kernel boot: \/boot\/vmlinuz-6\.1\.0-25-amd64 and \/boot\/initrd\.img-6\.1\.0-25-amd64, root=UUID=/);
  const none = { rootDevice: '/dev/sda', tooLarge: [] };
  const loader = bootable({ boot: none, exists: { ...facts().exists, '/boot/grub2/grub.cfg': true } });
  t.ok(loader.ok, 'GRUB\'s configuration: the bootloader boots it');
  t.match(loader.message, /^boots through its bootloader \(\/boot\/grub2\/grub\.cfg\); no direct kernel boot: no \/vmlinuz/);
  const neither = bootable({ boot: none });
  t.notOk(neither.ok);
  t.equal(neither.level, 'error');
  t.match(neither.message, /^has neither a kernel to boot directly \(no \/vmlinuz with \/initrd\.img, and no \/boot\/vmlinuz-VERSION with its initrd\) nor a BIOS bootloader/);
  t.match(neither.fix, /linux-image-amd64.*grub-install/);
  // A kernel without a root= to give it boots only through a loader.
  const noUuid = bootable({ boot: { ...facts().boot!, root: undefined, rootDevice: '/dev/sda1' } });
  t.notOk(noUuid.ok);
  t.match(noUuid.message, /its root file system \/dev\/sda1 has no UUID/);
  const huge = bootable({ boot: { ...none, tooLarge: ['/boot/vmlinuz-9.9'] } });
  t.match(huge.message, /\/boot\/vmlinuz-9\.9 over 512 MiB/);
  t.notOk(bootable({ boot: undefined }).ok, 'a verdict without boot facts is verified again');
  t.ok(bootable({ os: undefined, osv: true }).ok, 'OSv boots from its own loader');
});

t.test('[requirements] can make a rule a warning or switch it off', async (t) => {
  const c = parseConfig('[requirements]\nopt-unused = warn\nopt-vm-present = off\n', 'x').config;
  const r = evaluateRules(facts({ optEntries: ['a'], exists: { '/workspace': true, '/home': true, '/usr/bin/cloud-init': true } }), { distro: null, arch: 'x86_64' }, c);
  t.equal(r.find((x) => x.id === 'opt-unused')!.level, 'warn');
  t.equal(r.find((x) => x.id === 'opt-vm-present')!.level, 'off');
});

function pool() {
  const root = mkdtempSync(join(tmpdir(), 'vt-pool-'));
  chmodSync(root, 0o755);
  const p = join(root, 'pool');
  mkdirSync(p, { mode: 0o755 });
  writeFileSync(join(p, 'good.qcow2'), 'x', { mode: 0o644 });
  writeFileSync(join(root, 'outside.qcow2'), 'x', { mode: 0o644 });
  const cfg = parseConfig(`[paths]\nimage_pool = ${p}\n`, 'x').config;
  return { root, p, cfg };
}
const faultOf = async (f: () => unknown) => {
  try {
    await f();
  } catch (e) {
    if (e instanceof JobFault) return e.problems[0]!;
    throw e;
  }
  throw new Error('no JobFault');
};

t.test('authorisation: inside the pool, root-owned, not writable, no escapes', async (t) => {
  const { root, p, cfg } = pool();
  t.equal((await authoriseImage({ img: 'good.qcow2', config: cfg })).declaredFormat, 'qcow2');
  symlinkSync(join(root, 'outside.qcow2'), join(p, 'escape.qcow2'));
  t.equal((await faultOf(() => authoriseImage({ img: 'escape.qcow2', config: cfg }))).id, 'pool-escape');
  t.equal((await faultOf(() => authoriseImage({ img: 'missing.qcow2', config: cfg }))).id, 'not-in-pool');
  mkdirSync(join(p, 'dir.qcow2'));
  t.match((await faultOf(() => authoriseImage({ img: 'dir.qcow2', config: cfg }))).message, /is a directory/);
  mkdirSync(join(p, 'team'), { mode: 0o775 });
  chmodSync(join(p, 'team'), 0o775);
  writeFileSync(join(p, 'team', 'a.qcow2'), 'x', { mode: 0o644 });
  t.match((await faultOf(() => authoriseImage({ img: 'team/a.qcow2', config: cfg }))).message, /directory .*team has mode 0775, writable by group/);
  writeFileSync(join(p, 'mine.qcow2'), 'x', { mode: 0o644 });
  chownSync(join(p, 'mine.qcow2'), NOBODY.uid, NOBODY.gid);
  t.match((await faultOf(() => authoriseImage({ img: 'mine.qcow2', config: cfg }))).message, /owned by uid 65534, not root/);
});

t.test('user images: refused by default; with allow_user_images only the owner\'s own', async (t) => {
  const { root, p } = pool();
  const img = join(root, 'user.qcow2');
  writeFileSync(img, 'x');
  chownSync(img, NOBODY.uid, NOBODY.gid);
  const strict = parseConfig(`[paths]\nimage_pool = ${p}\n`, 'x').config;
  t.match((await faultOf(() => authoriseImage({ img, config: strict }))).message, /is an absolute path/);
  const open = parseConfig(`[paths]\nimage_pool = ${p}\n[policy]\nallow_user_images = true\n`, 'x').config;
  t.equal((await authoriseImage({ img, config: open, ownerUid: NOBODY.uid })).origin, 'user');
  t.equal((await faultOf(() => authoriseImage({ img, config: open, ownerUid: 1234 }))).id, 'not-owner');
});

t.test('a corrupt verdict file means verify again, never a crash', async (t) => {
  const { root } = pool();
  const cfg = parseConfig(`[paths]\ncache_dir = ${root}/cache\n`, 'x').config;
  const digest = 'a'.repeat(64);
  mkdirSync(`${root}/cache/verdicts`, { recursive: true });
  const { policyHash, CHECKER_VERSION } = await import('../src/image/verdicts.js');
  const f = `${root}/cache/verdicts/${digest}-v${CHECKER_VERSION}-${policyHash(cfg)}.json`;
  for (const junk of ['', '{', 'null', '{"checker":1}', JSON.stringify({ checker: CHECKER_VERSION, digest: 'b'.repeat(64) })]) {
    writeFileSync(f, junk);
    t.equal(readVerdict(cfg, digest), undefined, JSON.stringify(junk));
  }
});
