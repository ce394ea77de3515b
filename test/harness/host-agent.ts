// The guest agent (src/seed/agent.ts) run for real on this host, as root with
// /usr/bin/python3, in its host-test mode: --port names a unix socket the test
// serves (standing in for the virtio port; closing a connection is the host
// going away), --config and --state stand in for /etc/vtorque/agent.json and
// /var/lib/vtorque/agent. The VM user is nobody, a real unprivileged account.
// Used by test/launch-agent.test.ts (frames by hand) and test/starter.test.ts
// (the job starter through a stand-in for qemu's chardev).
import tap from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_SOURCE } from '../../src/seed/agent.js';
import { NOBODY } from './mom.js';

export const PYTHON = '/usr/bin/python3';
export const WAIT_MS = 60_000;

let work: string | undefined;
/** One directory per test process for every agent it starts, with agent.py in it; removed at the process's end. */
export function agentWork(): string {
  if (work === undefined) {
    const w = mkdtempSync(join(tmpdir(), 'vtorque-agent-'));
    work = w;
    chmodSync(w, 0o755);
    tap.teardown(() => { spawnSync('rm', ['-rf', w]); });
    writeFileSync(join(w, 'agent.py'), AGENT_SOURCE, { mode: 0o700 });
  }
  return work;
}

export interface HostAgent {
  proc: ChildProcess;
  home: string;
  state: string;
  stderr: () => string;
  /** The agent's next connection to the test's socket. */
  accept: () => Promise<Socket>;
}

/** What startHostAgent needs of a test: somewhere to stop the agent and close the socket. */
export interface Tap { teardown: (fn: () => void | Promise<void>) => void }

let n = 0;
/** A fresh agent with its own socket, config, state directory and home for nobody. */
export async function startHostAgent(t: Tap, o: { config?: Record<string, unknown>; configOwner?: number; state?: string; home?: string } = {}): Promise<HostAgent> {
  const w = agentWork();
  const dir = join(w, `a${n++}`);
  mkdirSync(dir, { mode: 0o755 });
  const home = o.home ?? join(dir, 'home');
  if (!o.home) {
    mkdirSync(home, { mode: 0o700 });
    chownSync(home, NOBODY.uid, NOBODY.gid);
  }
  const config = join(dir, 'agent.json');
  writeFileSync(config, JSON.stringify(o.config ?? {
    user: 'nobody', uid: NOBODY.uid, home, vms: ['vnode01', 'vnode02'], np: 4,
    env: { PBS_JOBID: '42.head', PBS_JOBNAME: "it's $HOME `id`", PBS_O_WORKDIR: '/home/nobody/run 1', PBS_NODEFILE: '/etc/vtorque/nodefile' },
    script_env: { PBS_ENVIRONMENT: 'PBS_BATCH' }, nodefile_env: ['PBS_NODEFILE', 'PBS_VM_NODEFILE'], np_env: ['PBS_NP'],
  }), { mode: 0o600 });
  if (o.configOwner !== undefined) chownSync(config, o.configOwner, o.configOwner);
  const state = o.state ?? join(dir, 'state');
  const sockPath = join(dir, 'port.sock');
  const conns: Socket[] = [];
  let wake: (() => void) | undefined;
  const server: Server = createServer((s) => {
    conns.push(s);
    wake?.();
  });
  await new Promise<void>((resolve) => server.listen(sockPath, resolve));
  let err = '';
  const proc = spawn(PYTHON, [join(w, 'agent.py'), '--port', sockPath, '--config', config, '--state', state], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
  t.teardown(() => {
    proc.kill('SIGKILL');
    server.close();
    for (const c of conns) c.destroy();
  });
  const accept = async (): Promise<Socket> => {
    const deadline = Date.now() + WAIT_MS;
    while (conns.length === 0) {
      if (proc.exitCode !== null) throw new Error(`the agent exited ${proc.exitCode}: ${err}`);
      if (Date.now() > deadline) throw new Error(`the agent did not connect: ${err}`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 500);
      });
      wake = undefined;
    }
    return conns.shift()!;
  };
  return { proc, home, state, stderr: () => err, accept };
}

/**
 * VM 0 of a job, stood in for on this host: the agent's connections joined to
 * whoever connects to `path`, where the prologue's qemu has its agent chardev
 * (<job_dir>/<id>/vm-0.agent). A client that goes away is the host side of
 * the port closing: the agent's connection is closed too, as virtio-serial
 * shows the guest.
 */
export async function standInChardev(t: Tap, agent: HostAgent, path: string): Promise<void> {
  const server = createServer((host) => {
    host.pause();
    void agent.accept().then((guest) => {
      host.pipe(guest);
      guest.pipe(host);
      host.on('close', () => guest.destroy());
      guest.on('close', () => host.destroy());
      host.on('error', () => undefined);
      guest.on('error', () => undefined);
      host.resume();
    }, () => host.destroy());
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  // The job starter runs as the job owner; qemu's real socket is the owner's through its group.
  chmodSync(path, 0o777);
  t.teardown(() => { server.close(); });
}
