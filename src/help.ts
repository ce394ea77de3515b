// Every command's --help text, in one place. Loaded only when help is asked
// for (it is bundled with the heavy code), so the fast path of every job does
// not parse it.
import { DEFAULT_CONFIG_FILE } from './config/load.js';
import { VERSION } from './version.js';

const EXIT_CODES = `Exit codes:
  0  the job runs (or the check passed)
  1  the job's fault: bad #VM request, image not allowed or not compliant. Torque aborts the job.
  2  the node's fault: config, tools, disk, locks, deadline. Torque requeues the job.
     Also a busy node: the job fits this node but other VM jobs hold the room now;
     Torque requeues it and the node is not taken offline.`;

export const HELP: Record<string, string> = {
  main: `vtorque-prologue ${VERSION}: Torque prologue for jobs that run in VMs

pbs_mom runs this as root before every job. A job asks for VMs with #VM lines
in its script header, next to its #PBS lines:

  #PBS -l nodes=1:ppn=8
  #VM img=debian12.qcow2,vcpus=4,ram=8G
  #VM vms_per_node=2

Jobs without #VM lines are not touched: nothing printed, exit 0.

Usage: vtorque-prologue [--config FILE] COMMAND [ARGS]

Commands:
  prologue            run by pbs_mom as mom_priv/prologue on Mother Superior
  prologue-parallel   run by pbs_mom as mom_priv/prologue.parallel on sister nodes
  epilogue            run by pbs_mom as mom_priv/epilogue: removes the job's VM files
  epilogue-parallel   the same on sister nodes
  check               try a job script before submitting it: check --job SCRIPT
  doctor              check this node (config, tools, KVM, libguestfs, timeouts, dirs, mom_priv or slurm, launch, Torque)
  submit-filter       Torque's SUBMITFILTER: refuses bad #VM requests at qsub time
  slurm-prolog        run by slurmd as slurm.conf's Prolog (Slurm)
  slurm-epilog        run by slurmd as slurm.conf's Epilog: removes the job's VM files
  submit-check        run by job_submit.lua: refuses bad #VM requests at sbatch time
  cache               the node's image cache: cache list | gc | verify | evict DIGEST
  help COMMAND        what a command does, its options and an example

Global options:
  --config FILE   the ini file (default ${DEFAULT_CONFIG_FILE})
  --help, -h      this text
  --version, -V   print the version

${EXIT_CODES}

Examples:
  vtorque-prologue check --job run.pbs     try a job script before submitting it
  vtorque-prologue help check              what check does, its options, examples
  vtorque-prologue doctor                  (root) is this node ready for VM jobs?

Admins: the log is JSON lines, path in [paths] log_file; every key is documented
in conf/prologue.ini and doc/admin.md. 'help starter': the job starter that runs
a #VM job's script in its VM.`,
  prologue: `vtorque-prologue [--config FILE] prologue JOBID USER GROUP JOBNAME RESOURCES QUEUE ACCOUNT [SCRIPT]

Run by pbs_mom as root before the job starts, with Torque's argv. Older Torque
passes 7 arguments; the job script is then read from
<torque_home>/mom_priv/jobs/JOBID.SC. For a job with #VM lines it resolves the
request against [defaults] and [policy], prepares the VMs' files under
<job_dir>/JOBID/ with a manifest.json, and prints a summary into the job output.

On exit 1 Torque does not deliver the job's .o/.e files, so the report is also
appended to the job's error path (qstat's Error_Path, or PBS_O_WORKDIR/JOBNAME.eNNN),
written as the job's owner. On exit 2 (a node fault) the node is taken
offline with a "vtorque:" note ([torque] offline_on_fault); see 'help doctor'.
It takes no options of its own; --config FILE comes before the command.

Example (what pbs_mom does):
  cd /var/spool/torque/mom_priv && ./prologue 42.head alice users job1 \\
     walltime=01:00:00,nodes=1:ppn=4 batch '' /var/spool/torque/mom_priv/jobs/42.head.SC

${EXIT_CODES}`,
  'prologue-parallel': `vtorque-prologue [--config FILE] prologue-parallel JOBID USER GROUP JOBNAME RESOURCES QUEUE ACCOUNT [SCRIPT]

Run by pbs_mom on each sister node of a multi-node job, with the prologue's
argv, before Mother Superior's prologue. A sister has no job script, so it asks
Torque (qstat -f) for the job's variables: VTORQUE_REQUEST, which the
submit-filter adds at qsub time, or VM_IMG=..., VM_VCPUS=... given with
qsub -v. Neither: not a VM job. No answer from qstat: exit 2 (requeue).
Each node takes its place in the job's host list (PBS_NODEFILE, else qstat's
exec_host), so VM hostnames (v<host>-<n>) and indices are unique across the
job; each node prepares its own VMs and writes its own manifest.json.
It takes no options of its own; --config FILE comes before the command.

Example (what pbs_mom does on a sister node):
  cd /var/spool/torque/mom_priv && ./prologue.parallel 42.head alice users job1 \\
     walltime=01:00:00,nodes=2:ppn=4 batch ''

${EXIT_CODES}`,
  epilogue: `vtorque-prologue [--config FILE] epilogue JOBID USER GROUP JOBNAME SESSION RESOURCES USED QUEUE ACCOUNT EXITCODE [SCRIPT]

Run by pbs_mom after the job. Removes <job_dir>/JOBID/ (overlays, seeds,
manifest), <ramdisk_dir>/JOBID/ and the job's lease on the cached image, on
this node and nothing else. A job without any of them costs
three stats. It takes no options of its own; --config FILE comes before the command.

Example (what pbs_mom does):
  cd /var/spool/torque/mom_priv && ./epilogue 42.head alice users job1 4242 \\
     walltime=01:00:00,nodes=1:ppn=4 cput=00:10:00,mem=2gb batch '' 0 \\
     /var/spool/torque/mom_priv/jobs/42.head.SC

Exit codes: 0 cleaned up or nothing to do; 2 cleanup failed (see the log).`,
  'epilogue-parallel': `vtorque-prologue [--config FILE] epilogue-parallel JOBID USER GROUP JOBNAME SESSION RESOURCES USED QUEUE ACCOUNT EXITCODE [SCRIPT]

The epilogue on sister nodes; same argv and behaviour as epilogue: removes
<job_dir>/JOBID/ on this node, if there is one.

Example (what pbs_mom does on a sister node):
  cd /var/spool/torque/mom_priv && ./epilogue.parallel 42.head alice users job1 4242 \\
     walltime=01:00:00,nodes=2:ppn=4 cput=00:10:00,mem=2gb batch '' 0

Exit codes: 0 cleaned up or nothing to do; 2 cleanup failed (see the log).`,
  check: `vtorque-prologue [--config FILE] check --job SCRIPT [--queue QUEUE] [--render DIR] [--json]
vtorque-prologue [--config FILE] check --image NAME|PATH... [--distro D] [--arch A] [--json]

--job reads the #VM lines of a job script as the prologue would, fills the gaps from
[defaults] and checks them against [policy]. Prints the resolved request with
where each value came from, or every problem with its line and a fix. Touches
nothing on the node; any user can run it. With --render DIR it also writes the
cloud-init seed each VM would get (DIR/vm-N/meta-data, user-data,
network-config), as you, from this directory, so you can read exactly what the
VMs will be told; [seed] network_command is not run.

--image verifies images as the prologue does: format safety (our header
reading, then qemu-img info/check) and the guest image requirements, looked
up with libguestfs (one appliance for all the images named; ~30 s without
KVM). It prints one table per image: each rule, ok/FAIL/WARN, and the fix. A
NAME is looked up in the image pool; an absolute PATH is checked where it is,
so admins can try an image before putting it in the pool. Verdicts are kept in
the cache, so a second check of an unchanged image is instant. Only root looks
inside images and keeps verdicts: run by a user, --image shows the verdict this
node holds for a pool image (found through the pool's SHA256SUMS), and says
"not checked" with what to do for the others (ask the admin, check --job, or
submit: the node checks the image when the job starts).

Options:
  --job SCRIPT    the job script to check
  --queue QUEUE   the queue you submit to (queues in [policy] vm_queues force VMs)
  --render DIR    with --job: write each VM's cloud-init seed files under DIR
  --image NAME..  one or more images
  --distro D      with --image: the distro a job would ask for (checks distro-match)
  --arch A        with --image: the arch a job would ask for (default: [defaults] arch)
  --json          machine-readable output

Examples:
  vtorque-prologue check --job run.pbs
  vtorque-prologue check --job run.pbs --render /tmp/seeds
  vtorque-prologue check --image debian12.qcow2 rocky9.qcow2
  vtorque-prologue check --image /root/build/new.qcow2 --distro rocky

Exit codes: 0 fine (or not a VM job), 1 the job or an image would be rejected, 2 config or node broken, or an image not checked (run by a user).`,
};

HELP.cache = `vtorque-prologue [--config FILE] cache list|gc|verify|evict DIGEST [--json]

The node's image cache under [paths] cache_dir: one verified copy of each
image, named by its sha256 and shared by every job; each VM runs on its own
copy-on-write overlay of it. Run as root.

  list           every cached image: digest, size, last use, the jobs that hold
                 it (leases) and the pool names that map to it; then the space
                 used against [cache] max_size and min_free
  gc             remove partial copies left by killed prologues, leases of jobs
                 Torque no longer has (older than [cache] lease_max_age), and
                 evict least recently used images until the limits hold
  verify         re-hash every cached image; a mismatch is moved to
                 <cache_dir>/quarantine/ and the next job copies the image afresh
  evict DIGEST   remove one image (a unique prefix of 8+ digits will do);
                 refused while a job holds it
  --json         machine-readable output

Examples:
  vtorque-prologue cache list
  vtorque-prologue cache evict 3f2a9c01
  vtorque-prologue cache verify --json

Exit codes: 0 done; 1 verify found a mismatch, or evict was refused; 2 cannot run (config, permissions).`;

HELP['slurm-prolog'] = `vtorque-prologue [--config FILE] slurm-prolog

Run by slurmd as root (slurm.conf: Prolog=, PrologFlags=Alloc) on every node of
a job, with no arguments: the job comes from SLURM_JOB_ID, SLURM_JOB_USER,
SLURM_JOB_UID/GID, SLURM_NODELIST and SLURMD_NODENAME. It reads the job script
with scontrol write batch_script (never the job's comment, which its owner can
change), and for #VM lines prepares and boots this node's VMs as the Torque
prologue does. Its "vtorque:" lines go to <job_dir>/<jobid>/summary, which the
TaskProlog (conf/slurm/task-prolog) prints at the top of the job's output.

The job script runs in VM 0: job_submit.lua puts three lines before the script
of every VM job it accepts, which exec vtorque-slurm-run as the job owner in the
batch step; it sends the script as submitted to VM 0's agent. A VM job whose
script was not wrapped (no job_submit.lua) is cancelled (problem slurm-wrap).

A job's fault (a bad request, an image that fails the requirements) cancels the
job with the reason in its comment (scontrol show job, squeue -o %k) and exits 0,
so that the node stays up. A node's fault drains the node with a "vtorque:"
reason (an operator's own reason is kept) and exits 2; slurmd then holds the job.
A busy node (the job fits, but other VM jobs hold the room now) puts the job back
in the queue (scontrol requeue, the reason in its comment) and exits 0: the node
is not drained.

Example (the wrapper slurm.conf's Prolog= names, root-owned 0755):
  #!/bin/sh
  exec /usr/bin/node /usr/local/bin/vtorque-prologue slurm-prolog

Exit codes:
  0  the job runs, or it was refused and cancelled, or requeued for a busy node, with the reason in its comment
  2  the node's fault: the node is drained with a "vtorque:" reason`;

HELP['slurm-epilog'] = `vtorque-prologue [--config FILE] slurm-epilog

Run by slurmd as root (slurm.conf: Epilog=) after every job, also one whose
Prolog failed or cancelled it: stops the job's VMs on this node and removes
their files, as the Torque epilogue does.

Example (the wrapper slurm.conf's Epilog= names, root-owned 0755):
  #!/bin/sh
  exec /usr/bin/node /usr/local/bin/vtorque-prologue slurm-epilog

Exit codes:
  0  the job's files on this node are removed (or there were none)
  2  the node's fault; slurmd drains the node`;

HELP['submit-check'] = `vtorque-prologue [--config FILE] submit-check [--vm-status] [--uid UID] [--partition P] < SCRIPT

Run by job_submit.lua (conf/slurm/job_submit.lua) inside slurmctld for a job
whose script mentions VMs, or that asks for a [policy] vm_queues partition: the
submit filter's cheap check of the #VM lines (syntax, the site's limits, the
image allowed and a safe disk image, a verdict a node already holds). Nothing
is hashed. Prints "vtorque:" lines; exit 1 refuses the job (the user's fault),
2 the check could not run (the lua refuses then too, rather than pass a job
unchecked). With --vm-status a VM job that passes exits 10, and the lua wraps
its script so that it runs in VM 0.

Example (what job_submit.lua runs, as SlurmUser):
  vtorque-prologue submit-check --vm-status --uid 1000 --partition batch < job.sh

Exit codes:
  0  the request is fine, or not a VM job (notes, if any, are shown to the user)
  10 with --vm-status: a VM job whose request is fine
  1  the user's fault: the job is refused with the printed lines
  2  the check could not run (config, pool): the job is refused too`;

HELP['submit-filter'] = `vtorque-prologue [--config FILE] submit-filter [QSUB-ARGS...] < SCRIPT > FILTERED

Run by qsub, as the submitting user, before a job is submitted: the job script
on stdin, qsub's own arguments as argv. It reads the #VM lines as the prologue
does and checks them against [defaults] and [policy]; checks that the image is
in the pool and allowed, and that its header is a safe disk image; and, when
[paths] shared_verdicts holds a verdict for the image (found through the
digest in the pool's SHA256SUMS), refuses an image that fails the guest image
requirements. A bad request is refused there and then, with the messages the
prologue would print when the job starts.

A VM job's script comes back byte for byte, plus one line after its #PBS lines:
  #PBS -v VTORQUE_REQUEST=v1:img=debian12.qcow2:vcpus=4
so the job's sister nodes, which never see the script, get the request from
the job's variables. Other scripts come back unchanged.

Where the admin's ini is not readable by users, only the form of the request is
checked (the node checks the limits and the image when the job starts).

Install (on every host users run qsub on), in TORQUE_HOME/torque.cfg:
  SUBMITFILTER /usr/local/sbin/vtorque-submitfilter
with that file a root-owned, 0755 script:
  #!/bin/sh
  exec /usr/bin/node /opt/vtorque-prologue/bin/vtorque-prologue submit-filter "$@"
(When torque.cfg names none, Torque 6.1's qsub runs <torque prefix>/libexec/qsub_filter,
else the legacy /usr/local/sbin/torque_submitfilter.)
Users can skip a filter, so it is a convenience: the prologue still checks everything.

Options: qsub's own; -q, -v, -V, -C and -l are read, the rest ignored.

Example:
  vtorque-prologue submit-filter -q batch < job.pbs > /dev/null && echo accepted

Exit codes: 0 submit (stdout is the script); 1 the request is bad, qsub refuses
the job and shows why; 2 the filter or the site config is broken, qsub refuses
the job (a broken filter never lets a script through unchecked).`;

HELP.doctor = `vtorque-prologue [--config FILE] doctor [--json] [--clear] [--skip CHECK,...]

Checks this node the way the prologue will use it, one line per finding, each
with what to fix. Run it as root after installing or editing the ini, and
after the node was taken offline with a "vtorque:" note.

Checks, in order:
  config     the ini is valid (unknown keys are warnings), root's and not
             writable by group or others, nor is any directory above it
  tools      every [tools] program exists, is root's (and every directory
             above it), and its --version
  kvm        the KVM probe, afresh: this node's kernel booted under KVM, as
             the launch account, for the VMs' qemu options and libguestfs's;
             ok only when it reached its panic line (in 20 s at most), else
             a warning (TCG), a failure where the config demands KVM
  guestfs    libguestfs launches its appliance, with KVM or TCG, and how long
             it took (TCG: ~15-90 s)
  timeouts   $prologalarm (mom_priv/config, 300 s by default) leaves
             [timeouts] total 20 s; [launch] boot and total hold a boot with
             the accelerator found (TCG up to 300 s) after a new image's
             libguestfs work (warnings, with the lines to set)
  dirs       pool, cache, job, ramdisk and log directories: root-owned, not
             writable by others, nor is any directory above them; one that
             is missing under a world-writable directory (/dev/shm, /tmp)
             fails, since any user could create it first, and one that
             exists there is a warning (a reboot may empty it)
  space      free space on the cache filesystem against [cache] min_free and max_size
  mom_priv   prologue, prologue.parallel, epilogue, epilogue.parallel: root,
             0500, running vtorque-prologue with this ini in a clean
             environment (env -i; else a warning); the node, env and program
             files they run, and every directory above them, are root's
  slurm      ([batch] system = slurm, instead of mom_priv and torque) scontrol
             show config answers; Prolog=, Epilog= run our wrappers (root's, a
             clean environment); TaskProlog= is ours; PrologFlags has Alloc;
             JobSubmitPlugins has lua and job_submit.lua is ours;
             PrologEpilogTimeout >= [timeouts] total + 3 x qstat; this node is
             not down, nor drained by vtorque (--clear resumes it)
  launch     mom_priv/config starts jobs through vtorque-starter (without it
             a #VM job's script runs on the host) and has no
             $job_starter_run_privileged (Slurm: the vtorque-slurm-run that
             job_submit.lua names); the starter is root's, as is every
             directory above it; the launch account ([launch] user) exists
             and can open /dev/kvm (else a warning: TCG); qemu-system exists
  torque     qstat -B reaches pbs_server; pbsnodes knows this node, and
             whether it is offline and whose note it carries

Options:
  --json          machine-readable output
  --clear         once every check passes, bring the node back online and
                  clear its note, only if the note is ours ("vtorque: ...");
                  an operator's offline or note is never touched. On a Slurm
                  node: resume it, only if its drain reason is ours
  --skip CHECKS   leave out some checks, e.g. --skip guestfs,kvm (quicker;
                  config always runs; timeouts then assumes what it must)

Examples:
  vtorque-prologue doctor
  vtorque-prologue --config /etc/vtorque/prologue.ini doctor --clear
  vtorque-prologue doctor --skip guestfs --json

Exit codes: 0 healthy (warnings allowed); 1 problems found (or --clear could
not reach pbsnodes or scontrol); 2 doctor could not run (bad options).`;

HELP.starter = `vtorque-starter SHELL [ARG...]   (pbs_mom's $job_starter; not run by hand)

Runs a #VM job's batch script in VM 0 of Mother Superior as you, so its output
goes to the job's .OU/.ER and its exit status is the job's. pbs_mom starts every
job's shell through it, as the job owner, with the shell's path (SHELL) and the
script, or a line naming it, on stdin; and every TM task (pbsdsh, tm_spawn) as
PROGRAM [ARG...], which runs on the host as given. A job whose prologue booted
no VM (no <job_dir>/JOBID/vm-0.agent socket) gets its shell exactly as without
a starter (a login shell unless pbs_mom's $source_login_batch says false), or
the site's own $job_starter if install.sh found one. qdel's SIGTERM is passed
to the script in the VM, which has until Torque's SIGKILL (kill_delay, 2 s by
default) to exit.

Interactive jobs (qsub -I) get their shell on the host, not in the VM: the
agent in the VM runs batch scripts only. One line on stderr says so; from that
shell, reach the VMs as you would any host.

qsub -F arguments reach the script in the VM as "$@".

Example (what pbs_mom does for job 42.head of a user whose shell is bash):
  echo <mom_priv>/jobs/42.head.SC | vtorque-starter /bin/bash

Exit codes: the script's exit status (128+N when signal N ended it); 143 (130
for SIGINT) when qdel came before the script started in the VM; 69 VM 0's
agent could not be reached, or the connection was lost before the script's
exit status came; 70 the agent refused the script or broke the protocol; 66 the
script could not be read (over 16 MiB).`;

export function helpFor(cmd: string | undefined): string | undefined {
  return HELP[cmd ?? 'main'];
}


HELP.vsub = `vsub [--config FILE] [QSUB-OPTIONS] [-vm key=value[,key=value...]]... [SCRIPT]

vTorque's submit command, for users coming from vTorque: qsub's options plus
-vm, submitted through Torque's qsub. Each -vm becomes a '#VM key=value,...'
line added after the script's first line (#!...), and the script's own
'#PBS -vm' lines become '#VM' lines; #VM is the native form, and any qsub with
the site's submit filter reads '#PBS -vm' lines too. Every other byte of the
script stays as it is; the script then reaches qsub on stdin, named after its
file as qsub would name it (-N NAME), unless -N is given. Without any VM
request vsub runs qsub with exactly your arguments.

vsub's options:
  -vm key=value,...  a VM request, as on a #VM line; may be repeated. Keys:
                     img distro arch vcpus ram vms_per_node vcpu_pinning fs_type
                     metadata vm_prologue vm_epilogue vrdma iocm iocm_min_cores
                     iocm_max_cores unclot unclot_shmem (disk is refused here)
  -gf                refused: vTorque's development mode only generated its
                     wrapper files; try a script with 'vtorque-prologue check --job'
  -listImages        refused: ask your admin for the pool's images, and try one
                     with 'vtorque-prologue check --image NAME'
  --config FILE      the ini to find qsub next to [tools] qstat (default ${DEFAULT_CONFIG_FILE})
  --help             this text
Also refused: -vm with -I (an interactive job has no script for the request),
'-vmkey=value' without a blank (qsub would read it as -v), a key given both by
-vm and in the script, and words after SCRIPT (use -F "ARGS").

qsub is the first one on your PATH that is not vsub itself, else the one next
to [tools] qstat of the ini.

Examples:
  vsub -l nodes=2,walltime=00:15:00 -vm img=debian12.qcow2,vcpus=4 job.sh
  vsub -vm vcpus=4 -vm ram=8G job.sh       two #VM lines
  vsub job.sh                             a script with '#PBS -vm' lines

Exit codes: qsub's; 1 when vsub refuses the submission (qsub was not run).`;
