// Runs a command as it would run on a node where the admin's ini is absent,
// whatever this machine holds: in a private mount namespace, empty tmpfses
// cover /etc/vtorque and the default pool, cache and job directories
// (/var/lib/vtorque, /var/cache/vtorque), so neither an installed prologue.ini
// nor the machine's images or verdicts are read, and the real directories are
// not touched. For the tests of what users get without --config (the
// program's default paths).
import { existsSync } from 'node:fs';

/** [file, args] for spawnSync: cmd with args, with /etc/vtorque and the default data directories empty. */
export function withoutSiteConfig(cmd: string, args: readonly string[]): [string, string[]] {
  const hide = ['/etc/vtorque', '/var/lib/vtorque', '/var/cache/vtorque'].filter((d) => existsSync(d))
    .map((d) => `mount -t tmpfs -o size=1m,mode=0755 vtorque-hidden ${d} && `).join('');
  return ['/usr/bin/unshare', ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', `${hide}exec "$@"`, 'no-site-config', cmd, ...args]];
}
