// bench/starter: a non-VM job started through $job_starter (bin/vtorque-starter,
// as the harness plays pbs_mom) against the same job with no starter,
// alternating, and the ratio of medians. Target: at most 1.2. The harness
// starts each process through a small python feeder (the pipe and descriptors
// pbs_mom gives); its own cost, measured as a third series (the feeder
// exec'ing /bin/true), is taken off both sides, so that it does not water the
// ratio down.
import { Mom } from '../test/harness/mom.js';

const RUNS = Number(process.env.RUNS ?? 40);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function timed(mom: Mom, starter: boolean, i: number): Promise<number> {
  const job = { id: `${i}${starter ? 's' : 'n'}.bench`, script: '#!/bin/bash\necho hello\n' };
  mom.submit(job);
  const t0 = process.hrtime.bigint();
  const r = await mom.startJob(job, { starter, stdin: 'script' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.code !== 0) throw new Error(`unexpected: ${r.code} ${r.ou}${r.er}`);
  return ms;
}

/** The harness's own cost: the feeder, then env exec'ing /bin/true. */
async function feeder(mom: Mom, i: number): Promise<number> {
  const job = { id: `${i}f.bench` };
  const t0 = process.hrtime.bigint();
  const r = await mom.startTask(job, { starter: '/usr/bin/env', argv: ['/bin/true'] });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.code !== 0) throw new Error(`unexpected: ${r.code} ${r.ou}${r.er}`);
  return ms;
}

async function main() {
  const mom = new Mom();
  for (let i = 0; i < 3; i++) { await timed(mom, false, -i - 1); await timed(mom, true, -i - 1); } // warm the page cache
  const bare: number[] = [];
  const through: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    base.push(await feeder(mom, i));
    bare.push(await timed(mom, false, i));
    through.push(await timed(mom, true, i));
  }
  const f = median(base);
  const b = median(bare) - f;
  const s = median(through) - f;
  console.log(`starter: ${RUNS} runs each, alternating (a non-VM job, bash -l reading the script)`);
  console.log(`  the harness's feeder alone   median ${f.toFixed(1)} ms (taken off both below)`);
  console.log(`  no $job_starter              median ${b.toFixed(1)} ms`);
  console.log(`  through vtorque-starter      median ${s.toFixed(1)} ms`);
  console.log(`  ratio ${(s / b).toFixed(2)} (target <= 1.20)`);
}

main().catch((e) => { console.error(e); process.exit(1); });
