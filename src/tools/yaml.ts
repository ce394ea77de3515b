// yaml, loaded on first use, like execa (src/tools/execa.ts): in the bundles
// it is dist/vendor-yaml.cjs taken with require, so a VM job pays for parsing
// it only when it writes or reads YAML. Under tsc (the unit tests) it is the package.
declare const require: ((id: string) => unknown) | undefined;

export type YamlModule = typeof import('yaml');

export function loadYaml(): Promise<YamlModule> {
  if (typeof require === 'function') return Promise.resolve(require('./vendor-yaml.cjs') as YamlModule);
  return import('yaml');
}
