// A VMDK's descriptor names its extents: files the node would then read as
// root (qemu-img, libguestfs, the VM). Only a single-file VMDK, whose only
// extent is itself, may pass; a descriptor naming a host file is refused
// before any tool opens it.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdtempSync, openSync, readSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../src/config/load.js';
import { describeImage } from '../../src/image/authorise.js';
import { screenImage } from '../../src/image/verify.js';
import { isJobFault } from '../../src/core/errors.js';

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vt-vmdk-'));
  chmodSync(root, 0o755);
  const secret = join(root, 'root-only.img');
  writeFileSync(secret, Buffer.alloc(1024 * 1024, 0x53), { mode: 0o600 });
  const config = parseConfig(`[paths]\ncache_dir = ${root}/cache\nimage_pool = ${root}\n[policy]\nformats = qcow2,raw,vmdk\n`, 'x').config;
  return { root, secret, config };
}

async function screen(path: string, config: ReturnType<typeof setup>['config']) {
  const img = describeImage(path, path, lstatSync(path), 'pool');
  return screenImage(img, { config, want: { distro: null, arch: 'x86_64' } }).then(
    (s) => ({ ok: true as const, s }),
    (e: unknown) => {
      if (!isJobFault(e)) throw e;
      return { ok: false as const, ids: e.problems.map((p) => p.id), text: e.problems.map((p) => `${p.message}. Fix: ${p.fix}`).join('\n') };
    },
  );
}

t.test('a VMDK descriptor whose extent is a root-only host file is refused', async (t) => {
  const { root, secret, config } = setup();
  const d = join(root, 'disk.vmdk');
  execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', d, '1M']);
  writeFileSync(d, execFileSync('cat', [d], { encoding: 'utf8' }).replace(/^RW 2048 FLAT "[^"]*" 0$/m, `RW 2048 FLAT "${secret}" 0`));
  const r = await screen(d, config);
  t.notOk(r.ok, 'refused');
  if (!r.ok) {
    t.ok(r.ids.includes('vmdk-extent'), `refused for its extents (${r.ids.join(',')})`);
    t.match(r.text, /Fix: .*qemu-img convert/);
  }
});

t.test('a binary VMDK whose embedded descriptor names a host file as its extent is refused', async (t) => {
  const { root, secret, config } = setup();
  const d = join(root, 'sparse.vmdk');
  execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', d, '64M']);
  // The embedded descriptor starts at the sector the header's descriptorOffset names.
  const fd = openSync(d, 'r+');
  const head = Buffer.alloc(512);
  readSync(fd, head, 0, 512, 0);
  const at = Number(head.readBigUInt64LE(28)) * 512;
  const desc = Buffer.alloc(Number(head.readBigUInt64LE(36)) * 512);
  readSync(fd, desc, 0, desc.length, at);
  const text = desc.toString('latin1').replace(/\0+$/, '');
  const evil = text.replace(/^RW (\d+) SPARSE "[^"]*"$/m, `RW 2048 FLAT "${secret}" 0\nRW 129024 SPARSE "sparse.vmdk"`);
  t.not(evil, text, 'the extent line was rewritten');
  const out = Buffer.alloc(desc.length);
  out.write(evil, 'latin1');
  writeSync(fd, out, 0, out.length, at);
  closeSync(fd);
  const r = await screen(d, config);
  t.notOk(r.ok, 'refused');
  if (!r.ok) t.ok(r.ids.includes('vmdk-extent'), `refused for its extents (${r.ids.join(',')})`);
});

t.test('a single-file VMDK (its only extent is itself) still passes the format checks', async (t) => {
  const { root, config } = setup();
  const d = join(root, 'plain.vmdk');
  execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', d, '64M']);
  const r = await screen(d, config);
  t.ok(r.ok, r.ok ? 'passes' : r.text);
  if (r.ok && !r.s.cached) t.equal(r.s.format.format, 'vmdk');
});
