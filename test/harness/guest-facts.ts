// What guestfish finds in a compliant Debian guest, as plain facts: the rule
// tests change one field at a time from here.
import { effectiveDatasources } from '../../src/image/datasources.js';
import type { GuestFacts } from '../../src/image/guestfs.js';

const GROUPS: [string, number][] = [['root', 0], ['adm', 4], ['disk', 6], ['sudo', 27], ['users', 100], ['nogroup', 65534]];

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
    // Some of Debian's own groups, and nogroup, which the tests' job owner (nobody) has.
    groupFile: { size: 64, entries: GROUPS.map(([name, gid]) => ({ name, gid })), bad: [] },
    // A Debian kernel as the /vmlinuz and /initrd.img links name it: rule bootable.
    boot: { kernel: { vmlinuz: '/boot/vmlinuz-6.1.0-25-amd64', initrd: '/boot/initrd.img-6.1.0-25-amd64', bytes: [8_000_000, 30_000_000] }, root: 'UUID=0b6c7a2e-4f4a-4b7c-8d1e-2f3a4b5c6d7e', rootDevice: '/dev/sda1', tooLarge: [] },
    ...over,
  };
  return { ...f, datasources: effectiveDatasources(f) };
}
