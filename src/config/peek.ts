// The two keys the non-VM path of every job needs ([policy] vm_queues and
// [paths] torque_home), read without building the whole schema: that table's
// construction is most of what the fast path would otherwise spend on config.
import { readFileSync } from 'node:fs';
import ini from 'ini';
import { absPathType, listType, stringType, type ValueType } from './values.js';

export const DEFAULT_CONFIG_FILE = '/etc/vtorque/prologue.ini';
export const DEFAULT_TORQUE_HOME = '/var/spool/torque';

/** [policy] vm_queues: the schema uses this very type, so both read the same text the same way. */
export const queueListType: ValueType<string[]> = listType(stringType(/^[A-Za-z0-9._-]{1,64}$/, 'a queue name'), 'queue names');
const torqueHomeType = absPathType();

/** Never throws: a broken ini must not stop non-VM jobs; loadConfig reports it on the VM path. */
export function peekConfig(file: string): { vmQueues: string[]; torqueHome: string } {
  const dflt = { vmQueues: [] as string[], torqueHome: DEFAULT_TORQUE_HOME };
  let raw: Record<string, Record<string, unknown> | undefined>;
  try {
    raw = ini.parse(readFileSync(file, 'utf8')) as typeof raw;
  } catch {
    return dflt;
  }
  const q = raw.policy?.vm_queues;
  const h = raw.paths?.torque_home;
  const queues = typeof q === 'string' ? queueListType.parse(q) : undefined;
  const home = typeof h === 'string' ? torqueHomeType.parse(h) : undefined;
  return {
    vmQueues: queues?.ok ? queues.value : dflt.vmQueues,
    torqueHome: home?.ok ? home.value : dflt.torqueHome,
  };
}
