// 100,000 random and mutated job scripts through the directive parser and the
// request resolver: the only acceptable outcomes are a request or a JobFault,
// and every message line stays one printable line.
import t from 'tap';
import { parseConfig } from '../src/config/load.js';
import { resolveRequest } from '../src/request/resolve.js';
import { scanDirectives } from '../src/request/directives.js';
import { JobFault } from '../src/core/errors.js';
import { jobFaultReport } from '../src/report/user.js';
import { VM_KEY_NAMES } from '../src/request/keys.js';

const N = 100_000;
const config = parseConfig('', 'fuzz').config;

// Deterministic, so a failure can be replayed: mulberry32.
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const SEEDS = [
  '#!/bin/bash\n#PBS -l nodes=1\n#VM img=debian12.qcow2,vcpus=4,ram=8G\n#VM vms_per_node=2,fs_type=ramdisk\necho\n',
  '#VM distro=rocky,arch=x86_64,vrdma=true,iocm_min_cores=1,iocm_max_cores=2\n',
  '#VM metadata=cfg.yaml,vm_prologue=./a.sh,disk=/scratch/d.img,unclot_shmem=1G\n',
];
const PIECES = ['#VM ', '#PBS ', '\n', '\r\n', ',', '=', '..', '/', '$(', '`', '\u0000', '\u001b', 'é', '\uFFFD', ' ', '\t', '#', '99999999999999999999', '-1', '0', 'G', 'T', ...VM_KEY_NAMES];

function mutate(r: () => number, s: string): string {
  const ops = 1 + Math.floor(r() * 6);
  for (let i = 0; i < ops; i++) {
    const at = Math.floor(r() * (s.length + 1));
    const op = r();
    if (op < 0.4) s = s.slice(0, at) + PIECES[Math.floor(r() * PIECES.length)] + s.slice(at);
    else if (op < 0.6) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(r() * 8));
    else if (op < 0.8) s = s.slice(0, at) + String.fromCharCode(Math.floor(r() * 0x3000)) + s.slice(at);
    else s = s.slice(0, at) + s.slice(Math.floor(r() * s.length));
  }
  return s;
}

function randomScript(r: () => number): string {
  const lines: string[] = [];
  const n = Math.floor(r() * 8);
  for (let i = 0; i < n; i++) {
    let l = r() < 0.6 ? '#VM ' : '';
    const items = Math.floor(r() * 4);
    for (let j = 0; j < items; j++) l += `${PIECES[Math.floor(r() * PIECES.length)]}=${PIECES[Math.floor(r() * PIECES.length)]},`;
    lines.push(l);
  }
  return lines.join(r() < 0.5 ? '\n' : '\r\n');
}

t.test(`${N} random or mutated job scripts never raise anything but a JobFault`, async (t) => {
  const r = rng(20261126);
  let accepted = 0;
  let rejected = 0;
  let badLines = 0;
  let unexpected: unknown;
  for (let i = 0; i < N && unexpected === undefined; i++) {
    const script = i % 3 === 0 ? randomScript(r) : mutate(r, SEEDS[i % SEEDS.length]!);
    try {
      const scan = scanDirectives(script, r() < 0.05);
      if (scan.problems.length > 0) throw new JobFault('syntax', scan.problems);
      resolveRequest({ directives: scan.directives, config });
      accepted++;
    } catch (e) {
      if (!(e instanceof JobFault)) {
        unexpected = { script, error: String((e as Error).stack) };
        break;
      }
      rejected++;
      for (const l of jobFaultReport('1.srv', e.message, e.problems)) {
        // eslint-disable-next-line no-control-regex
        if (/[\u0000-\u001f\u007f]/.test(l)) badLines++;
      }
    }
  }
  t.same(unexpected, undefined, 'no uncaught exception');
  t.equal(badLines, 0, 'no control character reaches a report line');
  t.equal(accepted + rejected, N);
  t.ok(accepted > 100 && rejected > 100, `both outcomes seen (accepted ${accepted}, rejected ${rejected})`);
});
