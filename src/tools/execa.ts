// execa, for the guestfish session (src/image/guestfs.ts), loaded on first use.
// In the bundles it is a file of its own (dist/vendor-execa.cjs) taken with
// require: ~300 KB that a VM job whose verdict is cached never parses. Under
// tsc's ES modules (the unit tests) it is the package itself.
declare const require: ((id: string) => unknown) | undefined;

export type ExecaModule = typeof import('execa');

export function loadExeca(): Promise<ExecaModule> {
  if (typeof require === 'function') return Promise.resolve(require('./vendor-execa.cjs') as ExecaModule);
  return import('execa');
}
