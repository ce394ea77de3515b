// The two keys the non-VM path of every job needs ([policy] vm_queues and
// [paths] torque_home), read without building the whole schema: that table's
// construction is most of what the fast path would otherwise spend on config.
import { iniValue, readIniLenient } from './ini.js';
import { absPathType, listType, stringType, type ValueType } from './values.js';

export const DEFAULT_CONFIG_FILE = '/etc/vtorque/prologue.ini';
export const DEFAULT_TORQUE_HOME = '/var/spool/torque';

/** [policy] vm_queues: the schema uses this very type, so both read the same text the same way. */
export const queueListType: ValueType<string[]> = listType(stringType(/^[A-Za-z0-9._-]{1,64}$/, 'a queue name'), 'queue names');
const torqueHomeType = absPathType();

/**
 * The two keys the non-VM fast path needs, without validating the rest: a
 * broken ini must stop VM jobs (exit 2, node offline), not every job on the
 * node. Never throws: unreadable or invalid values fall back to the defaults
 * here; the VM path (loadConfig) and `doctor` report them properly.
 */
export function peekConfig(file: string): { vmQueues: string[]; torqueHome: string } {
  const raw = readIniLenient(file);
  return {
    vmQueues: iniValue(raw, 'policy', 'vm_queues', queueListType) ?? [],
    torqueHome: iniValue(raw, 'paths', 'torque_home', torqueHomeType) ?? DEFAULT_TORQUE_HOME,
  };
}
