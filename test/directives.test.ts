import t from 'tap';
import { scanDirectives, HEADER_CAP } from '../src/request/directives.js';

t.test('directives are read from the header, as qsub reads #PBS lines', async (t) => {
  const r = scanDirectives('#!/bin/bash\n#PBS -l nodes=1\n\n# a comment\n#VM img=a.qcow2,vcpus=2\n#VM ram=4G\necho go\n');
  t.same(r.directives.map((d) => [d.key, d.value, d.line]), [['img', 'a.qcow2', 5], ['vcpus', '2', 5], ['ram', '4G', 6]]);
  t.equal(r.vmLines, 2);
  t.same(r.problems, []);
});

t.test('a #VM line after the first command is ignored, as #PBS lines are, with a note', async (t) => {
  const r = scanDirectives('#!/bin/sh\necho hi\n#VM img=x\n');
  t.equal(r.vmLines, 0);
  t.same(r.directives, []);
  t.match(r.notes[0], /line 3: #VM after the first command \(line 2\) is ignored/);
});

t.test('an indented comment does not end the header, an indented command does', async (t) => {
  t.equal(scanDirectives('  # hi\n#VM img=a\n').vmLines, 1);
  t.equal(scanDirectives('  true\n#VM img=a\n').vmLines, 0);
});

t.test('CRLF line endings are read, and the user is told bash may fail', async (t) => {
  const r = scanDirectives('#!/bin/sh\r\n#VM img=a.qcow2\r\necho\r\n');
  t.same(r.directives.map((d) => d.value), ['a.qcow2']);
  t.match(r.notes.join('\n'), /CRLF/);
});

t.test('look-alike directives get a note and are not used', async (t) => {
  for (const l of ['#vm img=a', '# VM img=a', '  #VM img=a', '#VM:img=a']) {
    const r = scanDirectives(`${l}\necho\n`);
    t.equal(r.vmLines, 0, l);
    t.match(r.notes.join(), /looks like a #VM directive/, l);
  }
});

t.test('syntax problems name their line', async (t) => {
  const r = scanDirectives('#VM\n#VM img\n#VM =x\n#VM a=1,,b=2\n');
  t.same(r.problems.map((p) => p.where), ['line 1', 'line 2', 'line 3', 'line 4']);
  t.same(r.directives.map((d) => d.key), ['a', 'b']);
});

t.test('spaces around items are allowed; values keep inner text', async (t) => {
  const r = scanDirectives('#VM  img=a.qcow2 ,  vcpus=4\n');
  t.same(r.directives.map((d) => [d.key, d.value.trim()]), [['img', 'a.qcow2'], ['vcpus', '4']]);
});

t.test('a truncated header says only the first bytes were read', async (t) => {
  const r = scanDirectives('#VM img=a\n' + '#\n'.repeat(10), true);
  t.match(r.notes.join(), new RegExp(`first ${HEADER_CAP / 1024} KiB`));
});

// vTorque's form: a site moving from vTorque keeps its scripts (issue 14, item 9).
t.test('#PBS -vm lines (vTorque\'s form) are read like #VM lines, with a note that #VM is the native form', async (t) => {
  const vt = scanDirectives('#!/bin/bash\n#PBS -l nodes=1\n#PBS -vm img=a.qcow2,vcpus=2\n#PBS  -vm\tram=4G\necho go\n');
  const vm = scanDirectives('#!/bin/bash\n#PBS -l nodes=1\n#VM img=a.qcow2,vcpus=2\n#VM ram=4G\necho go\n');
  t.same(vt.directives, vm.directives);
  t.equal(vt.vmLines, 2);
  t.same(vt.problems, []);
  t.same(vt.pbsVmLines, [3, 4]);
  t.match(vt.notes.join('\n'), /lines 3, 4: '#PBS -vm' is vTorque's form of '#VM' and is read as '#VM'.*native/);
  t.same(vm.pbsVmLines, []);
});

t.test('a #PBS -vm line with nothing after it, or continued with \\, is a syntax problem in its own words', async (t) => {
  const r = scanDirectives('#PBS -vm\n#PBS -vm img=a.qcow2,\\\n#PBS -vm vcpus\n');
  t.same(r.problems.map((p) => p.where), ['line 1', 'line 2', 'line 3']);
  t.match(r.problems[0]!.message, /^#PBS -vm has nothing after it/);
  t.match(r.problems[0]!.fix, /#PBS -vm img=/);
  t.match(r.problems[1]!.message, /continued/);
});

t.test('look-alikes of #PBS -vm get a note and are not used', async (t) => {
  for (const l of ['  #PBS -vm img=a', '#pbs -vm img=a', '#PBS -vmimg=a', '#PBS -VM img=a']) {
    const r = scanDirectives(`${l}\necho\n`);
    t.equal(r.vmLines, 0, l);
    t.match(r.notes.join(), /looks like vTorque's '#PBS -vm'/, l);
  }
  const after = scanDirectives('#!/bin/sh\necho\n#PBS -vm img=a\n');
  t.equal(after.vmLines, 0);
  t.match(after.notes.join(), /line 3: #PBS -vm after the first command \(line 2\) is ignored/);
});
