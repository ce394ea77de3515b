// The guest agent: the program in the VM that runs the job script for the job
// starter on the host (src/launch/protocol.ts frames over the virtio-serial
// port org.vtorque.agent.0), and what the seed writes to start it.
//
// The python source lives here as a string, not as a .py file read at build
// time: tsc and esbuild then carry it with no loader, and the tests write it
// out to run it (test/launch-agent.test.ts). String.raw keeps its backslashes;
// it must hold no backtick and no dollar-brace.
//
// Why it is safe to run as root in the guest: it reads only the seed's
// root-only agent.json and the frames; the one program it starts is the
// user's shell, after it became the configured user (never uid 0) in the
// child itself, with the script as a file that user owns in a directory of
// root's; one script per VM ever (a root-only marker in /var/lib survives
// agent restarts and reboots); nothing else can be run through the port.
import type { GuestVars } from '../core/engine.js';
import type { Account } from './account.js';

export const AGENT_PATH = '/usr/local/lib/vtorque/agent.py';
export const AGENT_CONFIG_PATH = '/etc/vtorque/agent.json';

/** /etc/vtorque/agent.json, root 0600 in the guest. */
export interface AgentConfig {
  user: string;
  uid: number;
  /** The VM user's home in the guest (user-data's homedir): the script runs there. */
  home: string;
  /** Every VM of the job, in job order: the lines of the node file the agent writes for each run. */
  vms: string[];
  /** vCPUs of the whole job (VMs x vcpus), for the variables np_env names. */
  np: number;
  /** The job's variables (profile.ts), set for the script whatever the image's /etc/profile does. */
  env: Record<string, string>;
  /** Variables only the job script gets (core/engine.ts GuestVars.script), over env. */
  script_env: Record<string, string>;
  /** Variables set to the run's own copy of the node file (GuestVars.nodefile), over env. */
  nodefile_env: string[];
  /** Variables set to np (GuestVars.np). */
  np_env: string[];
}

/** From the job's variables (profile.ts) and the batch system's names for what the agent sets per run. */
export function agentConfig(o: { account: Account; vars: readonly [string, string][]; guest: Pick<GuestVars, 'script' | 'nodefile' | 'np'>; vms: readonly string[]; vcpus: number }): AgentConfig {
  return {
    user: o.account.user, uid: o.account.uid, home: `/home/${o.account.user}`,
    vms: [...o.vms], np: o.vms.length * o.vcpus, env: Object.fromEntries(o.vars),
    script_env: Object.fromEntries(o.guest.script), nodefile_env: [...o.guest.nodefile], np_env: [...o.guest.np],
  };
}

/**
 * sh -c START_AGENT sh AGENT_PATH, as root from runcmd (cloud-init's final
 * stage). systemd-run puts the agent in a unit of its own: cloud-final.service
 * ends at once and the agent does not die with it. RHEL 8 has no
 * /usr/bin/python3 unless installed; its cloud-init runs on platform-python.
 */
export const START_AGENT = [
  'py=',
  'for p in /usr/bin/python3 /usr/libexec/platform-python; do if [ -x "$p" ]; then py=$p; break; fi; done',
  'if [ -z "$py" ]; then echo "vtorque: no python3 in this VM, so the job script cannot run" >&2; exit 1; fi',
  'if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then exec systemd-run --unit=vtorque-agent --property=Restart=on-failure --property=RestartSec=1 --property=StandardError=journal+console "$py" "$1"; fi',
  'nohup "$py" "$1" </dev/null >>/var/log/vtorque-agent.log 2>&1 &',
].join('; ');

/** The runcmd entry: an argv list, so cloud-init quotes each item (util.shellify). */
export function agentRuncmd(): string[] {
  return ['sh', '-c', START_AGENT, 'sh', AGENT_PATH];
}

/** write_files entries for the agent and its config: root-only, base64 like every file we write. */
export function agentWriteFiles(config: AgentConfig): Record<string, unknown>[] {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  return [
    { path: AGENT_PATH, content: b64(AGENT_SOURCE), encoding: 'b64', owner: 'root:root', permissions: '0700' },
    { path: AGENT_CONFIG_PATH, content: b64(JSON.stringify(config) + '\n'), encoding: 'b64', owner: 'root:root', permissions: '0600' },
  ];
}

export const AGENT_SOURCE = String.raw`#!/usr/bin/python3
# vtorque guest agent: runs the job script of a #VM job inside the VM,
# as the job's VM user, for the job starter on the host.
#
# Written by the vtorque prologue's cloud-init seed, started as root once
# cloud-init's final stage runs. Talks over the virtio-serial port
# org.vtorque.agent.0 in frames of one type byte, a 4-byte big-endian length
# and the payload (src/launch/protocol.ts on the host):
#   host -> guest: H hello, S script (once per VM, ever), I stdin (empty = EOF), K signal name
#   guest -> host: R ready {"hostname","agent"}, O stdout, E stderr, X exit {"status","signal"}, ! error text
# Nothing but the one job script can be run through the port, never as root.
# Python 3.6+, standard library only: RHEL 8's platform-python is 3.6.
import json
import os
import pwd
import re
import selectors
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

PORT_NAME = 'org.vtorque.agent.0'
CONFIG = '/etc/vtorque/agent.json'
# Root's: the "already ran" marker and each run's script directory. /var/lib, not /run: a
# reboot of the VM must not let the script run a second time.
STATE = '/var/lib/vtorque/agent'
AGENT_VERSION = 1
MAX_PAYLOAD = 16 * 1024 * 1024
CHUNK = 65536
# Stop reading the script's output while this much waits for the host: a slow
# host slows the script down (as a full terminal would) instead of filling the VM's memory.
OUT_HIGH = 1024 * 1024
STDIN_MAX = 64 * 1024 * 1024
RETRY = 0.2
# After the host hung up mid-run, or after the script's main process ended, how long leftovers get.
GRACE = 10.0
SIGNALS = ('TERM', 'KILL', 'INT', 'HUP', 'QUIT', 'USR1', 'USR2')
KNOWN = b'HRSIOEXK!'
ACCOUNT = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$')
ENV_NAME = re.compile(r'^[A-Z_][A-Z0-9_]{0,63}$')
# Run as the user (become_user); the user's own shell changes to their home (root
# may not enter an NFS home with root_squash) and becomes a login shell, so
# /etc/profile.d/vtorque-job.sh and the user's profile are read as on a login.
WRAPPER = ('HOME=$1; export HOME; '
           'cd -- "$HOME" || { echo "vtorque: cannot enter your home $HOME in the VM" >&2; exit 1; }; '
           'exec /bin/bash -l "$2"')


def log(msg):
    try:
        sys.stderr.write('vtorque-agent: %s\n' % msg)
        sys.stderr.flush()
    except OSError:
        pass


class ConfigError(Exception):
    pass


def frame(kind, payload=b''):
    if isinstance(payload, str):
        payload = payload.encode('utf-8')
    return kind.encode('ascii') + len(payload).to_bytes(4, 'big') + payload


class ProtocolError(Exception):
    pass


class Decoder(object):
    def __init__(self):
        self.buf = bytearray()

    def push(self, data):
        self.buf += data
        frames = []
        while len(self.buf) >= 5:
            kind = self.buf[0]
            if kind not in KNOWN:
                raise ProtocolError('unknown frame type 0x%02x' % kind)
            n = int.from_bytes(bytes(self.buf[1:5]), 'big')
            if n > MAX_PAYLOAD:
                raise ProtocolError('a frame of %d bytes is over the %d-byte limit' % (n, MAX_PAYLOAD))
            if len(self.buf) < 5 + n:
                break
            frames.append((chr(kind), bytes(self.buf[5:5 + n])))
            del self.buf[:5 + n]
        return frames


def load_config(path):
    """The seed's agent.json: root's, and nobody else may have changed it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError('cannot open %s: %s' % (path, e.strerror))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise ConfigError('%s must be a regular file of root, writable by root only' % path)
        raw = b''
        while True:
            b = os.read(fd, CHUNK)
            if not b:
                break
            raw += b
            if len(raw) > MAX_PAYLOAD:
                raise ConfigError('%s is too large' % path)
    finally:
        os.close(fd)
    try:
        c = json.loads(raw.decode('utf-8'))
    except ValueError as e:
        raise ConfigError('%s is not JSON: %s' % (path, e))
    if not isinstance(c, dict):
        raise ConfigError('%s is not a JSON object' % path)
    user, uid, home = c.get('user'), c.get('uid'), c.get('home')
    if not isinstance(user, str) or not ACCOUNT.match(user):
        raise ConfigError('the VM user %r is not a plain account name' % (user,))
    if not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
        raise ConfigError('the VM user\'s uid %r is not a number' % (uid,))
    if user == 'root' or uid == 0:
        raise ConfigError('refusing to run job scripts as root (the seed names user %s, uid %d)' % (user, uid))
    if not isinstance(home, str) or not home.startswith('/') or any(ch in home for ch in '\0\n\r'):
        raise ConfigError('the VM user\'s home %r is not an absolute path' % (home,))
    vms = c.get('vms', [])
    if not isinstance(vms, list) or not all(isinstance(v, str) and re.match(r'^[a-z0-9-]{1,63}$', v) for v in vms):
        raise ConfigError('vms must be a list of host names')
    np = c.get('np', 1)
    if not isinstance(np, int) or isinstance(np, bool) or np < 1:
        raise ConfigError('np must be a positive number')
    env, script_env = c.get('env', {}), c.get('script_env', {})
    for key, val in (('env', env), ('script_env', script_env)):
        if not isinstance(val, dict) or not all(isinstance(k, str) and ENV_NAME.match(k) and isinstance(v, str) and '\0' not in v for k, v in val.items()):
            raise ConfigError('%s must map variable names to strings' % key)
    nodefile_env, np_env = c.get('nodefile_env', []), c.get('np_env', [])
    for key, val in (('nodefile_env', nodefile_env), ('np_env', np_env)):
        if not isinstance(val, list) or not all(isinstance(k, str) and ENV_NAME.match(k) for k in val):
            raise ConfigError('%s must list variable names' % key)
    return {'user': user, 'uid': uid, 'home': home, 'vms': vms, 'np': np, 'env': env,
            'script_env': script_env, 'nodefile_env': nodefile_env, 'np_env': np_env}


def safe_state_dir(path):
    """Make (or check) root's state directory: 0711, so the user can reach a run directory by name, never list."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.mkdir(path, 0o711)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise ConfigError('%s must be a directory of root, writable by root only' % path)
    os.chmod(path, 0o711)
    return path


def become_user(uid, gid, groups):
    """preexec_fn of the job's shell: the user's groups, gid and uid, as pbs_mom sets a job's.

    Not runuser: its watching parent shares the job's process group (runuser -u
    calls no setsid), so a TERM for the job reached the shell twice (ours, then
    runuser's), bash ran its TERM trap again inside the first run and broke off
    its $(...) ("unexpected EOF while looking for matching )"), runuser wrote
    "Session terminated, killing shell..." into the job's stderr, SIGKILLed the
    shell 2 s later whatever its trap did, and ended with its own TERM instead
    of the trap's exit status. Here the shell is the child itself, the leader
    of its own session: a signal reaches the job's processes once, and its exit
    status is the job's. What the job loses is runuser's PAM session
    (pam_limits, pam_keyinit, pam_unix's log line), as under pbs_mom, which
    opens none either: its limits are the agent's (doc/admin.md).
    The group list is looked up in the parent (NSS); the child only sets ids.
    """
    def preexec():
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
            raise OSError('the job shell could not drop root')
    return preexec


def signal_name(n):
    try:
        return signal.Signals(n).name[3:]
    except ValueError:
        return None


class Job(object):
    """The job script, run once: as the VM user, in a process group of its own."""

    def __init__(self, agent, cfg, script, session):
        self.agent = agent
        self.session = session
        self.proc = None
        self.rundir = None
        self.out = {}
        self.stdin_fd = None
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.exited_at = None
        self.hup_at = None
        self.termed = False
        self.paused = False
        self.finished = False
        pw = pwd.getpwnam(cfg['user'])
        if pw.pw_uid == 0 or pw.pw_uid != cfg['uid']:
            raise ConfigError('the VM user %s has uid %d, the seed said %d' % (cfg['user'], pw.pw_uid, cfg['uid']))
        self.start(cfg, pw, script)

    def start(self, cfg, pw, script):
        self.rundir = tempfile.mkdtemp(prefix='job-', dir=self.agent.state)
        os.chmod(self.rundir, 0o711)
        path = os.path.join(self.rundir, 'script')
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o500)
        try:
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
            os.fchmod(fd, 0o500)
            view = memoryview(script)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        nodefile = os.path.join(self.rundir, 'nodefile')
        fd = os.open(nodefile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, ''.join(v + '\n' for v in cfg['vms']).encode('ascii'))
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
        # The batch system's names (agent.json): the job's variables, a batch
        # job's own, the node file of this run, the job's vCPUs; the account's
        # last, so that no name in the config can replace them.
        env = dict(cfg['env'])
        env.update(cfg['script_env'])
        env.update((k, nodefile) for k in cfg['nodefile_env'])
        env.update((k, str(cfg['np'])) for k in cfg['np_env'])
        env.update({
            'HOME': cfg['home'], 'USER': cfg['user'], 'LOGNAME': cfg['user'], 'SHELL': '/bin/bash',
            'PATH': '/usr/local/bin:/usr/bin:/bin',
        })
        if 'LANG' in os.environ:
            env['LANG'] = os.environ['LANG']
        # start_new_session: the shell leads a session and process group of its own, which
        # holds the job's processes and nothing else (not the agent): what signal() reaches.
        self.proc = subprocess.Popen(
            ['/bin/sh', '-c', WRAPPER, 'vtorque-job', cfg['home'], path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd='/', close_fds=True, start_new_session=True,
            preexec_fn=become_user(pw.pw_uid, pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid)))
        for f, kind in ((self.proc.stdout, 'O'), (self.proc.stderr, 'E')):
            fd = f.fileno()
            os.set_blocking(fd, False)
            self.out[fd] = kind
            self.agent.sel.register(fd, selectors.EVENT_READ, (self.on_output, fd))
        self.stdin_fd = self.proc.stdin.fileno()
        os.set_blocking(self.stdin_fd, False)
        log('job script started as %s (pid %d)' % (cfg['user'], self.proc.pid))

    def signal(self, name):
        if name == 'TERM':
            self.termed = True
        try:
            os.killpg(self.proc.pid, getattr(signal, 'SIG' + name))
        except ProcessLookupError:
            pass

    def hangup(self):
        """The host that sent the script is gone: the batch system sees the job ended, so the script must not run on."""
        if self.hup_at is None and self.exited_at is None:
            self.hup_at = time.monotonic()
            # After qdel the batch system KILLs the starter (Torque's kill_delay): the
            # script has its TERM already and may be in its trap, which a second TERM
            # would run again from inside; it gets GRACE, then KILL.
            if self.termed:
                log('the host hung up while the job script handled its TERM; KILL in %d s' % GRACE)
            else:
                log('the host hung up while the job script ran; sending it TERM')
                self.signal('TERM')

    def stdin(self, data):
        if self.stdin_fd is None:
            return
        if not data:
            self.stdin_eof = True
        elif len(self.stdin_buf) + len(data) > STDIN_MAX:
            self.agent.error('stdin over %d bytes; the script\'s stdin is closed' % STDIN_MAX)
            self.stdin_buf = bytearray()
            self.stdin_eof = True
        else:
            self.stdin_buf += data
        self.flush_stdin()

    def flush_stdin(self):
        while self.stdin_fd is not None and self.stdin_buf:
            try:
                n = os.write(self.stdin_fd, self.stdin_buf[:CHUNK])
            except BlockingIOError:
                break
            except OSError:
                self.stdin_buf = bytearray()
                self.stdin_eof = True
                break
            del self.stdin_buf[:n]
        self.watch_stdin()

    def watch_stdin(self):
        fd = self.stdin_fd
        if fd is None:
            return
        registered = fd in self.agent.sel.get_map()
        if self.stdin_buf and not registered:
            self.agent.sel.register(fd, selectors.EVENT_WRITE, (lambda mask, fd: self.flush_stdin(), fd))
        elif not self.stdin_buf:
            if registered:
                self.agent.sel.unregister(fd)
            if self.stdin_eof:
                self.proc.stdin.close()
                self.stdin_fd = None

    def on_output(self, mask, fd):
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        if not data:
            self.close_output(fd)
            return
        if self.agent.session == self.session:
            self.agent.send(self.out[fd], data)

    def close_output(self, fd):
        if fd in self.agent.sel.get_map():
            self.agent.sel.unregister(fd)
        kind = self.out.pop(fd, None)
        if kind is not None:
            (self.proc.stdout if kind == 'O' else self.proc.stderr).close()

    def pause(self, paused):
        """Back-pressure: while the host has not taken OUT_HIGH bytes, the script's output waits in its pipes."""
        if paused == self.paused:
            return
        self.paused = paused
        for fd in self.out:
            if paused:
                self.agent.sel.unregister(fd)
            else:
                self.agent.sel.register(fd, selectors.EVENT_READ, (self.on_output, fd))

    def tick(self):
        """True once the script is over and X went out (or could not)."""
        now = time.monotonic()
        if self.hup_at is not None and self.exited_at is None and now - self.hup_at > GRACE:
            self.signal('KILL')
        if self.exited_at is None:
            if self.proc.poll() is None:
                return False
            self.exited_at = now
            # As pbs_mom at a job's end: what the script left running goes with it.
            self.signal('KILL')
            if self.stdin_fd is not None:
                if self.stdin_fd in self.agent.sel.get_map():
                    self.agent.sel.unregister(self.stdin_fd)
                self.proc.stdin.close()
                self.stdin_fd = None
        # The output pipes reach EOF once the last holder is gone; one stuck in the
        # kernel (an NFS hang) must not keep X from the host forever.
        if self.out and now - self.exited_at < GRACE:
            return False
        for fd in list(self.out):
            self.close_output(fd)
        rc = self.proc.returncode
        status = {'status': 128 - rc if rc < 0 else rc & 255, 'signal': signal_name(-rc) if rc < 0 else None}
        log('job script ended: %s' % json.dumps(status))
        self.cleanup()
        if self.agent.session == self.session:
            self.agent.send('X', json.dumps(status))
        return True

    def cleanup(self):
        for name in ('script', 'nodefile'):
            try:
                os.unlink(os.path.join(self.rundir, name))
            except OSError:
                pass
        try:
            os.rmdir(self.rundir)
        except OSError:
            pass


class Agent(object):
    def __init__(self, port, config_path, state):
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.fd = None
        self.is_socket = False
        self.live = False
        self.retry_at = 0.0
        self.session = 0
        self.decoder = Decoder()
        self.outbuf = bytearray()
        self.greeted = False
        self.poisoned = False
        self.job = None
        self.missing_logged = False
        self.broken = None
        self.state = None
        self.cfg = None
        try:
            self.cfg = load_config(config_path)
            self.state = safe_state_dir(state)
        except (ConfigError, OSError) as e:
            # Still serve: the host then reads why in a '!' frame instead of waiting for a READY that never comes.
            self.broken = str(e)
            log('cannot run job scripts: %s' % self.broken)

    # --- the host side -------------------------------------------------

    def port_path(self):
        if self.port:
            return self.port
        p = '/dev/virtio-ports/' + PORT_NAME
        if os.path.exists(p):
            return p
        # Without udev's link: the port's name is in sysfs.
        base = '/sys/class/virtio-ports'
        try:
            for d in sorted(os.listdir(base)):
                try:
                    with open(os.path.join(base, d, 'name')) as f:
                        if f.read().strip() == PORT_NAME:
                            return '/dev/' + d
                except OSError:
                    continue
        except OSError:
            pass
        return None

    def connect(self):
        """Open the port (kept open for good) or, in host-test mode, connect to the test's socket."""
        if self.fd is None:
            path = self.port_path()
            if path is None:
                if not self.missing_logged:
                    # qemu was started without the port, or udev is slow: the READY wait then shows this on the console.
                    log('no virtio port %s yet; waiting for it' % PORT_NAME)
                    self.missing_logged = True
                return
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    # Host-test mode only (--port SOCKET): a unix socket the test serves stands for the port.
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(path)
                    except OSError:
                        s.close()
                        raise
                    self.fd = s.detach()
                    self.is_socket = True
                else:
                    self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
                    self.is_socket = False
                os.set_blocking(self.fd, False)
            except OSError:
                self.fd = None
                return
        if self.is_socket:
            self.begin()
            return
        # A port whose host side is not connected reads EOF at once; a connected one has data or EAGAIN.
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            self.begin()
            return
        except OSError:
            return
        if data:
            self.begin()
            self.receive(data)

    def begin(self):
        self.live = True
        self.session += 1
        self.decoder = Decoder()
        self.outbuf = bytearray()
        self.greeted = False
        self.poisoned = False
        self.sel.register(self.fd, selectors.EVENT_READ, (self.on_channel, self.fd))

    def hangup(self):
        if not self.live:
            return
        self.live = False
        self.sel.unregister(self.fd)
        if self.is_socket:
            os.close(self.fd)
            self.fd = None
        self.retry_at = time.monotonic() + RETRY
        if self.job is not None and self.job.session == self.session:
            self.job.hangup()
            self.job.pause(False)
        self.session += 1

    def on_channel(self, mask, fd):
        if mask & selectors.EVENT_WRITE:
            self.flush()
            if not self.live:
                return
        if mask & selectors.EVENT_READ:
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b''
            if not data:
                self.hangup()
                return
            self.receive(data)

    def send(self, kind, payload=b''):
        if not self.live:
            return
        self.outbuf += frame(kind, payload)
        self.flush()

    def error(self, text):
        self.send('!', text)

    def flush(self):
        while self.live and self.outbuf:
            try:
                n = os.write(self.fd, self.outbuf[:CHUNK])
            except BlockingIOError:
                break
            except OSError:
                self.hangup()
                return
            del self.outbuf[:n]
        if not self.live:
            return
        self.sel.modify(self.fd, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0), (self.on_channel, self.fd))
        if self.job is not None and self.job.session == self.session:
            self.job.pause(len(self.outbuf) >= OUT_HIGH)

    # --- frames --------------------------------------------------------

    def receive(self, data):
        if self.poisoned:
            return
        try:
            frames = self.decoder.push(data)
        except ProtocolError as e:
            # A byte stream has no frame boundary to find again: ignore the rest of this connection.
            self.poisoned = True
            self.error('protocol error: %s; reconnect' % e)
            return
        for kind, payload in frames:
            self.handle(kind, payload)
            if not self.live:
                return

    def handle(self, kind, payload):
        if kind == 'H':
            if self.broken:
                self.error('the VM cannot run the job script: %s' % self.broken)
                return
            self.greeted = True
            self.send('R', json.dumps({'hostname': socket.gethostname(), 'agent': AGENT_VERSION}))
        elif not self.greeted:
            self.error(('the VM cannot run the job script: %s' % self.broken) if self.broken else 'send H first')
        elif kind == 'S':
            self.run(payload)
        elif kind == 'I':
            # Only the connection that started the script feeds it; after a refused S this is silently dropped.
            if self.job is not None and self.job.session == self.session:
                self.job.stdin(payload)
        elif kind == 'K':
            name = payload.decode('ascii', 'replace')
            if name not in SIGNALS:
                self.error('cannot send signal %r; one of %s' % (name, ' '.join(SIGNALS)))
            elif self.job is None or self.job.exited_at is not None:
                self.error('no job script is running')
            else:
                self.job.signal(name)
        else:
            self.error('a %s frame is not for the VM' % kind)

    def run(self, script):
        if self.job is not None:
            self.error('the job script already ran')
            return
        # Claimed before anything runs, in a root-only file: a restarted agent (or a
        # rebooted VM) finds it and refuses a second run of the same job.
        try:
            fd = os.open(os.path.join(self.state, 'ran'), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            self.error('the job script already ran')
            return
        except OSError as e:
            self.error('cannot record the job start in %s: %s' % (self.state, e.strerror))
            return
        try:
            os.write(fd, json.dumps({'started': time.time(), 'bytes': len(script)}).encode('ascii'))
        finally:
            os.close(fd)
        try:
            self.job = Job(self, self.cfg, script, self.session)
        except (ConfigError, KeyError, OSError, subprocess.SubprocessError) as e:
            # SubprocessError: become_user failed in the child (Python says only that preexec_fn raised).
            why = (str(e) if isinstance(e, ConfigError) else ('no user %s in the VM' % self.cfg['user']) if isinstance(e, KeyError)
                   else 'could not become %s' % self.cfg['user'] if isinstance(e, subprocess.SubprocessError) else e.strerror or str(e))
            log('cannot start the job script: %s' % why)
            self.error('cannot start the job script: %s' % why)

    # --- main loop -----------------------------------------------------

    def serve(self):
        os.chdir('/')
        log('serving %s' % (self.port or PORT_NAME))
        while True:
            if not self.live and time.monotonic() >= self.retry_at:
                self.connect()
                if not self.live:
                    self.retry_at = time.monotonic() + RETRY
            for key, mask in self.sel.select(RETRY):
                callback, fd = key.data
                if fd in self.sel.get_map():
                    callback(mask, fd)
            if self.job is not None and not self.job.finished:
                self.job.finished = self.job.tick()


def main(argv):
    port, config, state = None, CONFIG, STATE
    args = list(argv)
    while args:
        a = args.pop(0)
        # --port/--config/--state: host-test mode only (tests drive the agent over a unix socket).
        if a in ('--port', '--config', '--state') and args:
            v = args.pop(0)
            if a == '--port':
                port = v
            elif a == '--config':
                config = v
            else:
                state = v
        else:
            log('usage: agent.py [--port PATH] [--config PATH] [--state DIR]')
            return 2
    if os.geteuid() != 0:
        log('must run as root (it runs the job script as the VM user)')
        return 2
    Agent(port, config, state).serve()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
`;
