// bench/fastpath: the non-VM job through the prologue, exactly as the pbs_mom
// harness runs it, against bare `node -e 0`, alternating, and the ratio of
// medians. Target: at most 1.3.
import { spawn } from 'node:child_process';
import { Mom } from '../test/harness/mom.js';

const RUNS = Number(process.env.RUNS ?? 40);

function time(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio: 'ignore', env: { PATH: '/bin:/usr/bin', LANG: 'C.UTF-8' } });
    c.on('error', reject);
    c.on('exit', () => resolve(Number(process.hrtime.bigint() - t0) / 1e6));
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main() {
  const mom = new Mom();
  const job = { id: '1.bench', script: '#!/bin/bash\n#PBS -l nodes=1:ppn=2\n#PBS -l walltime=01:00:00\nmodule load x\nsrun ./a.out\n' };
  mom.submit(job);
  const first = await mom.run('prologue', job);
  // A job without #VM lines: exit 0 and not a byte of output (it would land in the job's .o).
  if (first.code !== 0 || first.ou !== '' || first.er !== '') throw new Error(`unexpected: ${first.code} ${first.ou}${first.er}`);
  const base: number[] = [];
  const pro: number[] = [];
  for (let i = 0; i < 3; i++) { await time(process.execPath, ['-e', '0']); await mom.run('prologue', job); } // warm the page cache
  for (let i = 0; i < RUNS; i++) {
    base.push(await time(process.execPath, ['-e', '0']));
    pro.push((await mom.run('prologue', job)).ms);
  }
  const b = median(base);
  const p = median(pro);
  console.log(`fastpath: ${RUNS} runs each, alternating`);
  console.log(`  node -e 0                  median ${b.toFixed(1)} ms`);
  console.log(`  prologue, non-VM job       median ${p.toFixed(1)} ms (through mom_priv/prologue, as pbs_mom runs it)`);
  console.log(`  ratio ${(p / b).toFixed(2)} (target <= 1.30)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
