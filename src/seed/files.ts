// The NoCloud file set of one VM, and the staging directory media tools read
// it from: root-only (0700 directory, 0600 files), removed whatever happens.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';

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
    // Inputs for the media tools in a fresh private directory, gone afterwards:
    // no rename or fsync needed, only O_EXCL so nothing there is followed.
    for (const n of fileNames(files)) writeFileSync(`${staging}/${n}`, files[n]!, { mode: 0o600, flag: 'wx' });
    return await fn(staging);
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

