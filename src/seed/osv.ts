// OSv guests run OSv's own cloud-init (modules/cloud-init in the OSv tree),
// which reads one YAML mapping of its own dialect and stops at a key it has
// no handler for. It honours: hostname, files (path: content), run (calls of
// OSv's REST API, e.g. PUT /env/NAME with val=VALUE), mounts (NFS only),
// include, server, cassandra and monitoring-agent keys. There are no users,
// no packages and no shell in OSv, so only these are emitted. It goes through
// the same writer (render.ts toYaml) and its checks as the Linux user-data.
import type { Config } from '../config/schema.js';
import { profileLine } from './profile.js';
import { nfsMounts } from './user-data.js';

export const OSV_KEYS = ['hostname', 'files', 'run', 'mounts'] as const;
export const OSV_PROFILE_PATH = '/etc/vtorque-job.sh';

export function buildOsvData(o: { config: Config; hostname: string; user: string; vars: readonly [string, string][] }): Record<string, unknown> {
  const d: Record<string, unknown> = {
    hostname: o.hostname,
    files: { [OSV_PROFILE_PATH]: profileLine(o.vars) },
    // The application's environment: OSv's /env API, one call per variable.
    run: o.vars.map(([k, v]) => ({ PUT: `/env/${k}`, val: v })),
  };
  const mounts = nfsMounts(o.config, o.user).map(([src, dst, type]) => [src, dst, type, '', '0', '0']);
  if (mounts.length > 0) d.mounts = mounts;
  return d;
}
