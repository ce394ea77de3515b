// Issue 21 item 2: a user's image whose inspection runs past [timeouts] tool
// is the job's fault (exit 1), never the node's, and a time-out is never a
// verdict: nothing is stored, and the next job on the same image inspects it
// again. A pool image's time-out stays the node's (the admin's image, or a
// slow node).
import t from 'tap';
import { chmodSync, chownSync, copyFileSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Mom, NOBODY, testImages } from '../harness/mom.js';

/** A node whose guestfish never answers (an appliance stuck inside the image), and a user image in the job owner's home. */
function slowNode(): { mom: Mom; img: string; slowIni: string; realIni: string } {
  const mom = new Mom({ privateCache: true });
  const slow = join(mom.root, 'bin', 'slow-guestfish');
  writeFileSync(slow, '#!/bin/sh\nsleep 1000\n');
  chmodSync(slow, 0o755);
  const extra = '[policy]\nallow_user_images = true\n[timeouts]\ntotal = 600\ntool = 8\n';
  // The real appliance needs more than 8 s under TCG.
  const realIni = mom.defaultIni() + extra.replace('tool = 8', 'tool = 300');
  const slowIni = mom.defaultIni().replace('[tools]\n', `[tools]\nguestfish = ${slow}\n`) + extra;
  writeFileSync(mom.configFile, slowIni);
  const img = join(mom.workdir, 'mine.qcow2');
  copyFileSync(join(testImages(), 'debian-ok.qcow2'), img);
  chownSync(img, NOBODY.uid, NOBODY.gid);
  return { mom, img, slowIni, realIni };
}

const script = (img: string) => `#!/bin/sh\n#VM img=${img}\nhostname\n`;
const failed = (mom: Mom) => mom.logLines().filter((l) => l.msg === 'job failed') as { exit?: number; err?: { problems?: { id: string }[] } }[];
const verdicts = (mom: Mom) => (existsSync(join(mom.cacheDir, 'verdicts')) ? readdirSync(join(mom.cacheDir, 'verdicts')) : []);

t.test("a user image whose inspection times out: exit 1 with its message, no verdict stored, the node online; the next job inspects it again", async (t) => {
  const { mom, img, realIni } = slowNode();
  const r = await mom.prologue({ id: '81.srv', script: script(img) });
  t.equal(r.code, 1, r.er);
  t.match(r.er, /vtorque: .*mine\.qcow2 could not be inspected in the time this node gives a tool/);
  t.match(r.er, /mine\.qcow2: libguestfs did not finish looking inside it within 8 s \(\[timeouts\] tool\); nothing was recorded about it/);
  t.match(r.er, /Fix: submit again; if it happens again/);
  t.same(failed(mom).map((f) => [f.exit, f.err?.problems?.map((p) => p.id)]), [[1, ['inspection-timeout']]]);
  t.same(mom.pbsnodesCalls(), [], 'pbsnodes was never asked to offline the node');
  t.notMatch(mom.nodeState('node01').state, /offline/);
  t.same(verdicts(mom), [], 'the time-out was not stored as a verdict');
  t.same(readdirSync(join(mom.cacheDir, 'images')).filter((f) => !f.endsWith('.json')), [], 'nor was the image cached');

  // The same image with a guestfish that answers: inspected afresh, and the job is prepared.
  writeFileSync(mom.configFile, realIni);
  const again = await mom.prologue({ id: '82.srv', script: script(img) });
  t.equal(again.code, 0, again.er);
  t.ok(mom.logLines().some((l) => l.msg === 'inspecting images with libguestfs' && String(l.job ?? '').startsWith('82')), 'the next job inspected the image itself');
  t.equal(verdicts(mom).length, 1, 'its verdict is the one stored');
});

t.test("a pool image whose inspection times out stays the node's fault (exit 2)", async (t) => {
  const { mom } = slowNode();
  const r = await mom.prologue({ id: '83.srv', script: script('debian12.qcow2') });
  t.equal(r.code, 2, r.er);
  t.notMatch(r.er, /inspection-timeout|could not be inspected in the time/);
  t.same(verdicts(mom), [], 'no verdict stored');
});
