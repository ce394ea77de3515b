import t from 'tap';
import { jobSequence, parseJobArgs } from '../src/torque/contract.js';
import { NodeFault } from '../src/core/errors.js';

const pro = ['9.srv', 'alice', 'users', 'job1', 'walltime=00:05:00,nodes=1:ppn=2', 'batch', ''];

t.test('the 8-argument prologue form carries the script path', async (t) => {
  const a = parseJobArgs('prologue', [...pro, '/var/spool/torque/mom_priv/jobs/9.srv.SC']);
  t.equal(a.scriptPath, '/var/spool/torque/mom_priv/jobs/9.srv.SC');
  t.equal(a.account, '');
  t.equal(a.queue, 'batch');
});

t.test('the old 7-argument form has no script path', async (t) => {
  t.equal(parseJobArgs('prologue', pro).scriptPath, undefined);
});

t.test('the epilogue has 10 or 11 arguments', async (t) => {
  const a = parseJobArgs('epilogue', ['9.srv', 'alice', 'users', 'job1', '4242', 'walltime=1', 'cput=1', 'batch', '', '0', '/x.SC']);
  t.equal(a.sessionId, '4242');
  t.equal(a.jobExitCode, 0);
  t.equal(parseJobArgs('epilogue-parallel', ['9.srv', 'alice', 'users', 'j', '1', 'r', 'u', 'q', '', '-3']).jobExitCode, -3);
});

t.test('wrong argv is a node fault with the expected usage', async (t) => {
  for (const argv of [[], pro.slice(0, 6), [...pro, 'x', 'y'], ['../../x', ...pro.slice(1)], ['9.srv', 'a;b', ...pro.slice(2)]]) {
    t.throws(() => parseJobArgs('prologue', argv), NodeFault);
  }
});

t.test('job array ids are accepted and map to Torque output names', async (t) => {
  t.equal(parseJobArgs('prologue', ['12[3].srv', ...pro.slice(1)]).jobId, '12[3].srv');
  t.equal(jobSequence('12[3].srv'), '12-3');
  t.equal(jobSequence('9.srv.example.org'), '9');
});
