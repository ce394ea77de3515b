// Verification with the real tools on the images scripts/build-test-images
// makes: every hostile image is rejected with its rule id, the compliant ones
// pass, and the prologue turns that into exit codes and reports.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, Mom, testImages } from './harness/mom.js';

interface Row { image: string; expect: 'pass' | 'fail'; rule: string; extra: string }

const dir = testImages();
const rows: Row[] = readFileSync(join(dir, 'cases.tsv'), 'utf8').split('\n')
  .filter((l) => l.trim() !== '' && !l.startsWith('#'))
  .map((l) => { const [image, expect, rule, extra] = l.split('\t'); return { image: image!, expect: expect as Row['expect'], rule: rule ?? '', extra: extra ?? '' }; });

function checkImages(mom: Mom, names: string[], extra: string[] = []) {
  const r = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', ...names, ...extra, '--json'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stderr: r.stderr, results: JSON.parse(r.stdout || '[]') as { image: string; ok: boolean; problems?: { id: string }[]; rules?: { id: string; ok: boolean }[] }[] };
}

t.test('check --image: each test image passes or fails with its expected rule id, in one appliance', async (t) => {
  const mom = new Mom({ iniText: new Mom().defaultIni().replace(/image_pool = .*/, `image_pool = ${dir}`) });
  const plain = rows.filter((r) => r.extra === '');
  const r = checkImages(mom, plain.map((x) => x.image));
  t.equal(r.status, 1, r.stderr);
  t.equal(r.results.length, plain.length);
  for (const row of plain) {
    const got = r.results.find((x) => x.image === row.image)!;
    const failed = [...(got.problems ?? []).map((p) => p.id), ...(got.rules ?? []).filter((x) => !x.ok).map((x) => x.id)];
    if (row.expect === 'pass') t.same(failed, [], `${row.image} passes`);
    else t.ok(failed.includes(row.rule), `${row.image} fails ${row.rule} (got ${failed.join(',') || 'nothing'})`);
  }
  for (const row of rows.filter((x) => x.extra !== '')) {
    const [k, v] = row.extra.split('=');
    const one = checkImages(mom, [row.image], [`--${k}`, v!]);
    const failed = (one.results[0]?.rules ?? []).filter((x) => !x.ok).map((x) => x.id);
    t.ok(failed.includes(row.rule), `${row.image} with ${row.extra} fails ${row.rule}`);
  }
  const again = spawnSync(process.execPath, [BIN, '--config', mom.configFile, 'check', '--image', 'debian-ok.qcow2'], { encoding: 'utf8' });
  t.equal(again.status, 0);
  t.match(again.stdout, /cached verdict/);
  t.match(again.stdout, /ok {3}opt-unused/);
});

t.test('a VM job on a non-compliant image exits 1 with every failed rule and its fix', async (t) => {
  const mom = new Mom({ pool: { 'debian12.qcow2': 'debian-ok.qcow2', 'tools.qcow2': 'debian-opt-used.qcow2' } });
  const r = await mom.prologue({ id: '31.srv', name: 'opt', script: '#!/bin/sh\n#VM img=tools.qcow2,distro=debian\necho\n' });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /image tools\.qcow2: fails opt-unused: \/opt holds 2 entries \("intel", "license\.txt"\); should be empty, because the cluster mounts its \/opt there\. Fix: install software under \/opt-vm instead/);
  t.match(readFileSync(join(mom.workdir, 'opt.e31'), 'utf8'), /fails opt-unused/);
});

t.test('a distro that does not match the image is refused; no distro takes the image\'s', async (t) => {
  const mom = new Mom({ pool: { 'rocky9.qcow2': 'rocky-ok.qcow2' } });
  const bad = await mom.prologue({ id: '32.srv', script: '#VM img=rocky9.qcow2,distro=debian\n' });
  t.equal(bad.code, 1);
  t.match(bad.er, /fails distro-match: holds the redhat family, but the job asks for distro=debian/);
  const good = await mom.prologue({ id: '33.srv', script: '#VM img=rocky9.qcow2\n' });
  t.equal(good.code, 0, good.er);
  const m = JSON.parse(readFileSync(join(mom.jobDir, '33.srv', 'manifest.json'), 'utf8'));
  t.equal(m.request.family, 'redhat');
  t.equal(m.request.sources.distro, 'image');
  t.equal(m.image.inspected.distro, 'rocky');
});

t.test('format hazards are refused before libguestfs is started', async (t) => {
  const mom = new Mom({ pool: { 'b.qcow2': 'backing-host.qcow2', 'd.qcow2': 'external-data.qcow2', 'fifo.qcow2': 'debian-ok.qcow2' } });
  // A FIFO where the image should be: must not hang the prologue.
  spawnSync('rm', ['-f', join(mom.poolDir, 'fifo.qcow2')]);
  spawnSync('mkfifo', [join(mom.poolDir, 'fifo.qcow2')]);
  const cases: [string, string][] = [['b.qcow2', 'backing file'], ['d.qcow2', 'external data file'], ['fifo.qcow2', 'is a FIFO']];
  for (const [i, [img, rule]] of cases.entries()) {
    const r = await mom.prologue({ id: `34${i}.srv`, script: `#VM img=${img}\n` }, { alarm: 60 });
    t.equal(r.code, 1, img);
    t.match(r.er, rule, img);
  }
  t.notOk(mom.logLines().some((l) => l.msg === 'inspecting images with libguestfs'));
});

t.test('a verified image is not inspected again: the verdict is reused by digest', async (t) => {
  const mom = new Mom();
  const a = await mom.prologue({ id: '35.srv', script: '#VM vcpus=1\n' });
  const b = await mom.prologue({ id: '36.srv', script: '#VM vcpus=2\n' });
  t.equal(a.code, 0);
  t.equal(b.code, 0);
  const checked = mom.logLines().filter((l) => l.msg === 'image ready' && ['35.srv', '36.srv'].includes(String(l.job)));
  t.equal(checked.length, 2);
  t.equal(checked[1]!.fromCache, true);
  t.equal(checked[1]!.hashed, false, 'the stat memo spared the re-hash');
  t.match(b.ou, /meets the guest image requirements \(verdict cached\)/);
  // Changing the file (new ctime) makes it hashed again, still the same digest and verdict.
  writeFileSync(join(mom.root, 'touch'), '');
  spawnSync('touch', [join(mom.poolDir, 'debian12.qcow2')]);
  await mom.prologue({ id: '37.srv', script: '#VM vcpus=1\n' });
  const third = mom.logLines().filter((l) => l.msg === 'image ready' && l.job === '37.srv')[0]!;
  t.equal(third.hashed, true);
  t.equal(third.fromCache, true);
});

t.test('with require_checksums, a pool image must be in SHA256SUMS with its digest', async (t) => {
  const mom = new Mom({ ini: '[policy]\nrequire_checksums = true\n' });
  const sums = join(mom.poolDir, 'SHA256SUMS');
  writeFileSync(sums, `${'0'.repeat(64)}  other.qcow2\n`);
  const missing = checkImages(mom, ['debian12.qcow2']);
  t.equal(missing.status, 1);
  t.equal(missing.results[0]!.problems![0]!.id, 'checksum');
  writeFileSync(sums, `${'0'.repeat(64)}  debian12.qcow2\n`);
  t.equal(checkImages(mom, ['debian12.qcow2']).results[0]!.problems![0]!.id, 'checksum', 'a wrong digest is refused');
  const digest = spawnSync('sha256sum', [join(mom.poolDir, 'debian12.qcow2')], { encoding: 'utf8' }).stdout.split(' ')[0]!;
  writeFileSync(sums, `${digest}  debian12.qcow2\n`);
  const ok = checkImages(mom, ['debian12.qcow2']);
  t.equal(ok.status, 0, JSON.stringify(ok.results));
});
