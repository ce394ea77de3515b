// What may reach a guest from the node's and the job's names. Everything here
// ends up in YAML (always through the yaml package), in /etc/passwd and in a
// shell profile inside the VM, so each name either survives all three exactly
// or is refused here with what to do about it.
import { controlCharIn, quote } from '../config/values.js';
import type { BatchTerms } from '../core/engine.js';
import { JobFault, NodeFault } from '../core/errors.js';

// useradd/groupadd on Debian and RHEL both take this without their relaxed
// modes, and it is what NSS tools and mount paths handle everywhere.
const ACCOUNT = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;

export function checkAccountName(kind: 'user' | 'group', name: string): string {
  if (ACCOUNT.test(name) && name !== '.' && name !== '..') return name;
  throw new JobFault(`the job's ${kind} name cannot be created inside a VM`, [{
    id: 'seed-account', where: `${kind} ${quote(name, 40)}`,
    message: `${kind} names in VMs must be 1-32 of A-Z a-z 0-9 . _ - and not start with . or -`,
    fix: `submit the job as a ${kind} with such a name, or ask your admin to rename the ${kind} in the directory (LDAP)`,
  }]);
}

/**
 * The GECOS field is cosmetic, so a value /etc/passwd cannot hold (':' is its
 * separator, a newline ends the entry) is left out with a note instead of
 * failing the job. Anything else is copied exactly.
 */
export function gecosFor(raw: string): { gecos?: string; note?: string } {
  if (raw === '') return {};
  const ctl = controlCharIn(raw);
  if (ctl || raw.includes(':')) {
    return { note: `your full name (GECOS ${quote(raw, 40)}) contains ${ctl ?? "':'"}, which /etc/passwd cannot hold; the VM user gets no full name` };
  }
  return { gecos: raw };
}

/**
 * Paths from the batch system (the submit directory): any text survives the
 * profile's quoting, but a line break of any kind (U+2028 too) would start a
 * line of the user's in the YAML and the logs, so only single lines pass.
 */
export function checkJobPath(what: string, p: string): string {
  const ctl = controlCharIn(p);
  if (!p.startsWith('/') || ctl) {
    throw new JobFault(`${what} cannot be passed to the VMs`, [{
      id: 'seed-path', where: `${what} ${quote(p, 60)}`,
      message: ctl ? `contains ${ctl}` : 'is not an absolute path',
      fix: 'submit the job from a directory whose path has no control characters (newlines, tabs, line separators)',
    }]);
  }
  return p;
}

/** The job name (given at submission, or the script's file name) goes into the VMs' environment: one line of text only, as paths. */
export function checkJobName(name: string, terms: Pick<BatchTerms, 'jobNameOption'>): string {
  const ctl = controlCharIn(name);
  if (ctl) {
    throw new JobFault('the job name cannot be passed to the VMs', [{
      id: 'seed-jobname', where: `job name ${quote(name, 60)}`,
      message: `contains ${ctl}`,
      fix: `submit the job with a name of plain text (${terms.jobNameOption}), or rename the script it is named after`,
    }]);
  }
  return name;
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** vTorque's guest names: v<node>, plus -<index> when a node runs several VMs of the job. */
export function guestHostname(node: string, index: number, count: number, terms: Pick<BatchTerms, 'guestNameFix'>): string {
  const base = `v${node.toLowerCase()}`;
  const name = count > 1 ? `${base}-${index}` : base;
  if (!LABEL.test(name)) {
    throw new NodeFault(`cannot make a VM host name from this node's name`, [{
      id: 'seed-hostname', where: `node ${quote(node, 40)}`,
      message: `${quote(name, 70)} is not a DNS label (a-z 0-9 -, at most 63, no leading or trailing -)`,
      fix: terms.guestNameFix,
    }]);
  }
  return name;
}

/**
 * instance-id: unique per job and VM, and new on every start of the job, so a
 * requeued job's VMs run cloud-init's first-boot modules again.
 */
export function instanceId(jobId: string, jobIndex: number, nonce: string): string {
  const job = jobId.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '').slice(0, 64) || 'job';
  return `iid-${job}-vm${jobIndex}-${nonce}`;
}

/** Single-quoted for POSIX sh: the only byte a single-quoted string cannot hold is the quote itself. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
