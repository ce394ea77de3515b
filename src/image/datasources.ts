// cloud-init's datasource_list as cloud-init itself would settle it. Kept
// apart from the rules because it needs a YAML parser, which only the
// verification of a new image should pay for.
import { parse as parseYaml } from 'yaml';
import { quote } from '../config/values.js';
import type { Datasources, GuestFacts } from './guestfs.js';

/** The effective datasource_list: cloud.cfg, then cloud.cfg.d/*.cfg in sorted order; the last one set wins. */
export function effectiveDatasources(f: Pick<GuestFacts, 'cloudCfg' | 'cloudCfgD'>): Datasources {
  const errors: string[] = [];
  let list: string[] | undefined;
  let from: string | undefined;
  const docs = [{ name: '/etc/cloud/cloud.cfg', text: f.cloudCfg ?? '' }, ...f.cloudCfgD];
  for (const d of docs) {
    if (d.text.trim() === '') continue;
    let y: unknown;
    try {
      y = parseYaml(d.text, { maxAliasCount: 50, prettyErrors: false, uniqueKeys: false });
    } catch (e) {
      errors.push(`${d.name} is not valid YAML (${quote(String((e as Error).message).split('\n')[0]!, 60)})`);
      continue;
    }
    const v = (y && typeof y === 'object' ? (y as Record<string, unknown>).datasource_list : undefined);
    if (v === undefined) continue;
    list = Array.isArray(v) ? v.map((x) => String(x)) : typeof v === 'string' ? v.split(',').map((s) => s.trim()) : [];
    from = d.name;
  }
  return { list, from, errors };
}

