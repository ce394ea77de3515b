// The NoCloud file set of one VM, and the staging directory media tools read
// it from: root-only (0700 directory, 0600 files), removed whatever happens.
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { writeFileAtomic } from '../tools/atomic.js';

export interface SeedFiles {
  'meta-data': string;
  'user-data': string;
  'network-config'?: string;
}

export const fileNames = (f: SeedFiles): (keyof SeedFiles)[] =>
  (['meta-data', 'user-data', 'network-config'] as const).filter((n) => f[n] !== undefined);

export async function withStaging<T>(dir: string, files: SeedFiles, fn: (staging: string) => Promise<T>): Promise<T> {
  const staging = mkdtempSync(`${dir}/.seed-staging-`);
  try {
    chmodSync(staging, 0o700);
    for (const n of fileNames(files)) writeFileAtomic(`${staging}/${n}`, files[n]!, 0o600);
    return await fn(staging);
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
