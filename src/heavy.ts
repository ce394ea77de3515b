// Everything the non-VM fast path must not load: the VM pipeline, the failure
// handler (pino), and the commands. The build bundles this file
// separately (dist/vtorque-heavy.cjs), and src/lazy.ts loads it on demand.
import { checkJob as checkJobFor, type CheckJobOptions } from './check/job.js';
import { TORQUE_TERMS, torqueGuestVars } from './torque/engine.js';

export { prepareVmJob } from './pipeline/prologue.js';
export { cleanUpJob } from './pipeline/epilogue.js';
export { handleFailure } from './pipeline/failure.js';
export { torqueEngine } from './torque/engine.js';
export { slurmEngine } from './slurm/engine.js';
export { runSubmitCheck } from './slurm/submit-check.js';
export { configForCheck } from './check/job.js';
export { checkImages } from './check/image.js';
export { VM_KEYS } from './request/keys.js';
export { appendAsOwner } from './report/append-as-owner.js';
export { problemLine, line } from './report/user.js';
export { filterVmJob, filterFailureReport, filterExitCode } from './submit/vm.js';
export { runCacheCommand } from './cache/admin.js';
export { loadConfig } from './config/load.js';
export { doctorCommand } from './doctor/doctor.js';
export { HELP, helpFor } from './help.js';

/** check --render: the seeds carry Torque's names unless the caller names the batch system (batch: an engine, or its guestVars and terms). */
export function checkJob(o: Omit<CheckJobOptions, 'batch'> & { batch?: CheckJobOptions['batch'] }): ReturnType<typeof checkJobFor> {
  return checkJobFor({ ...o, batch: o.batch ?? { guestVars: torqueGuestVars, terms: TORQUE_TERMS } });
}
