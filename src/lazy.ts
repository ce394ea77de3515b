// The one door from the fast path to the rest of the program.
export type Heavy = typeof import('./heavy.js');

export function heavy(): Promise<Heavy> {
  return import('./heavy.js');
}
