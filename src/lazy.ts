// The one door from the fast path to the rest of the program.
export type Heavy = typeof import('./heavy.js');

// In the CommonJS bundle `require` exists and loads dist/vtorque-heavy.cjs
// directly: import() of a .cjs file would make Node scan all 500 KB of it for
// export names first (~50 ms). Under tsc's ES modules (the unit tests) it does not.
declare const require: ((id: string) => unknown) | undefined;

export function heavy(): Promise<Heavy> {
  if (typeof require === 'function') return Promise.resolve(require('./vtorque-heavy.cjs') as Heavy);
  return import('./heavy.js');
}

/** Slurm's Prolog/Epilog front, in its own bundle (dist/vtorque-slurm.cjs): a Torque job never parses it. */
export type SlurmHookModule = typeof import('./slurm/hook.js');
export function slurmHook(): Promise<SlurmHookModule> {
  if (typeof require === 'function') return Promise.resolve(require('./vtorque-slurm.cjs') as SlurmHookModule);
  return import('./slurm/hook.js');
}
