// What guestfish finds in a compliant Debian guest, as plain facts: the rule
// tests change one field at a time from here.
import { effectiveDatasources } from '../../src/image/datasources.js';
import type { GuestFacts } from '../../src/image/guestfs.js';

/** A compliant guest's facts, with `over` on top; the datasource verdict is derived as guestfs.ts derives it. */
export function compliantFacts(over: Partial<GuestFacts> = {}): GuestFacts {
  const f: GuestFacts = {
    os: { type: 'linux', distro: 'debian', arch: 'x86_64', major: '12', product: 'Debian 12', root: '/dev/sda' },
    osv: false,
    exists: { '/usr/bin/cloud-init': true, '/workspace': true, '/home': true, '/opt-vm': true },
    cloudInitModule: true,
    cloudCfgD: [],
    notes: [],
    datasources: { errors: [] },
    ...over,
  };
  return { ...f, datasources: effectiveDatasources(f) };
}
