#!/usr/bin/env bash
# Installs vtorque-prologue on a compute node and wires it into pbs_mom's mom_priv
# (or, with --slurm, into slurmd's Prolog, Epilog and TaskProlog and slurmctld's job_submit.lua).
set -euo pipefail
# What install.sh creates must not be group- or world-writable, whatever the admin's umask.
umask 022

usage() {
  cat <<'USAGE'
Usage: ./install.sh [options]

Builds vtorque-prologue, installs it under PREFIX, installs the config without
overwriting an existing one, creates the image pool, cache, job and log
directories named in its [paths] (root-owned, 0755; the log directory 0750),
installs a logrotate snippet, and writes mom_priv/prologue, prologue.parallel,
epilogue and epilogue.parallel wrappers (root-owned, mode 0500, as Torque
requires). The wrappers start node through env -i with only LANG, PATH and
the PBS_* variables the prologue reads, so nothing in pbs_mom's environment
(NODE_OPTIONS, LD_PRELOAD) reaches the root prologue. A script already there
is kept as <name>.orig and run first, with the same arguments; its non-zero
exit code wins. Then it runs `vtorque-prologue doctor` on the node. A second
run changes nothing.

The node the wrappers run is the one on PATH, after symlinks; install.sh
refuses it (exit 2) unless it and every directory above it are root's and not
writable by group or others, since root runs it before every job.

Options:
  --prefix DIR        where the program goes        (default /opt/vtorque-prologue)
  --torque-home DIR   TORQUE_HOME                   (default /var/spool/torque)
  --config DIR        where prologue.ini goes       (default /etc/vtorque)
  --logrotate DIR     where the logrotate snippet goes      (default /etc/logrotate.d)
  --bin-dir DIR       where users find the commands: vtorque-prologue (and vsub, if
                      built) are linked there to PREFIX/bin (default /usr/local/bin;
                      it must be root's and not writable by group or others)
  --no-bin-links      do not link the commands into --bin-dir
  --torque-prefix DIR where Torque is installed (DIR/bin/qstat, DIR/bin/pbsnodes).
                      Without it: the prefix of the running pbs_mom (mom_priv/mom.lock),
                      else qstat on PATH. The [tools] qstat and pbsnodes of a config
                      this run creates are set to what is found; in an existing
                      config only keys still at their defaults are
  --root DIR          install into a staging root instead of / (doctor is skipped:
                      the staged config names the node's real paths)
  --deps              first install the system packages with apt-get or dnf:
                      qemu-img, libguestfs tools, genisoimage or xorriso, mtools,
                      dosfstools, qemu-system, and Node.js if missing or older than 20
  --submit-filter FILE  also write Torque's submit filter wrapper at FILE (mode 0755), for
                      hosts where users run qsub. Torque 6.1's qsub runs what SUBMITFILTER in
                      TORQUE_HOME/torque.cfg names, else <torque prefix>/libexec/qsub_filter,
                      else the legacy /usr/local/sbin/torque_submitfilter
  --no-doctor         do not run doctor at the end
  --slurm             install for a Slurm node instead of Torque: no mom_priv
                      wrappers or $job_starter; instead PREFIX/bin/vtorque-slurm-prolog
                      and vtorque-slurm-epilog (root, 0755: what slurmd runs as Prolog
                      and Epilog, node through env -i with only LANG, PATH and the
                      SLURM_* variables the program reads), vtorque-slurm-run (what a
                      VM job's wrapped batch script runs), vtorque-task-prolog (the
                      TaskProlog), and job_submit.lua beside slurm.conf (a site's own
                      is never replaced: ours goes beside it as job_submit.lua.vtorque,
                      to merge). The ini gets [batch] system = slurm and [tools]
                      scontrol and scancel (found as for Torque: --slurm-prefix, the
                      running slurmd's prefix, scontrol on PATH; in an existing ini
                      only keys at their defaults change). It prints the slurm.conf
                      lines the node needs (Prolog=, Epilog=, TaskProlog=,
                      PrologFlags=Alloc, JobSubmitPlugins=lua, PrologEpilogTimeout=N,
                      N = [timeouts] total + 3 x [timeouts] qstat), and edits nothing
                      there unless --edit-slurm-conf
  --slurm-conf FILE   slurm.conf (default: $SLURM_CONF, else /etc/slurm/slurm.conf)
  --slurm-prefix DIR  where Slurm's clients are (DIR/bin/scontrol, DIR/bin/scancel)
  --edit-slurm-conf   with --slurm: apply those lines to slurm.conf (a copy first, as
                      slurm.conf.vtorque-YYYYmmddHHMMSS): the site's lines they replace
                      are kept commented out, PrologFlags and JobSubmitPlugins keep
                      the site's values and gain Alloc and lua; a site's own Prolog=,
                      Epilog= or TaskProlog= is refused with how to chain it. Never
                      runs scontrol reconfigure: it says when to. With --uninstall:
                      removes our lines and brings the site's back
  --dry-run           print every action, change nothing
  --uninstall         remove the wrappers (restoring any .orig), the program, the
                      links in --bin-dir that point at it, and the logrotate snippet;
                      keeps config, images, cache and logs
  -h, --help          this text

Examples:
  ./install.sh --deps                            # as root
  ./install.sh --torque-prefix /opt/torque       # Torque not in /usr/local
  sudo ./install.sh --torque-home /var/spool/torque --dry-run
  ./install.sh --root /tmp/stage                 # for packagers
  ./install.sh --slurm                           # a Slurm node: prints the slurm.conf lines
  ./install.sh --slurm --edit-slurm-conf         # ... and writes them into slurm.conf
Exit codes: 0 done and doctor is happy; 1 bad usage; 2 a step failed;
3 installed, but doctor found problems (fix them, then run doctor again).
USAGE
}

PREFIX=/opt/vtorque-prologue
TORQUE_HOME=/var/spool/torque
CONFIG_DIR=/etc/vtorque
ROOT=
DRY=0
UNINSTALL=0
DEPS=0
DOCTOR=1
LOGROTATE_DIR=/etc/logrotate.d
SUBMIT_FILTER=
BIN_DIR=/usr/local/bin
BIN_LINKS=1
TORQUE_PREFIX=
SLURM=0
SLURM_CONF_FILE=${SLURM_CONF:-/etc/slurm/slurm.conf}
SLURM_PREFIX=
EDIT_SLURM=0
while [ $# -gt 0 ]; do
  case "$1" in
    --submit-filter) SUBMIT_FILTER=$2; shift 2 ;;
    --slurm) SLURM=1; shift ;;
    --slurm-conf) SLURM_CONF_FILE=$2; shift 2 ;;
    --slurm-prefix) SLURM_PREFIX=$2; shift 2 ;;
    --edit-slurm-conf) EDIT_SLURM=1; shift ;;
    --bin-dir) BIN_DIR=$2; shift 2 ;;
    --no-bin-links) BIN_LINKS=0; shift ;;
    --torque-prefix) TORQUE_PREFIX=$2; shift 2 ;;
    --deps) DEPS=1; shift ;;
    --logrotate) LOGROTATE_DIR=$2; shift 2 ;;
    --no-doctor) DOCTOR=0; shift ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --torque-home) TORQUE_HOME=$2; shift 2 ;;
    --config) CONFIG_DIR=$2; shift 2 ;;
    --root) ROOT=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 1 ;;
  esac
done

SRC=$(cd "$(dirname "$0")" && pwd)

run() {
  if [ "$DRY" = 1 ]; then echo "would: $*"; else "$@"; fi
}

# Why root must not run or read FILE, or nothing: FILE or a directory above
# it is a symlink, not root's, or writable by group or others; a sticky
# directory (/tmp) is passed over when the entry below it is root's, as
# src/tools/trust.ts judges. Give it a path without symlinks (readlink -f).
untrusted_path() { # untrusted_path FILE
  local p=$1 below_uid="" uid mode who
  while :; do
    if [ -L "$p" ]; then echo "$p is a symlink"; return; fi
    if ! read -r uid mode < <(stat -c '%u %a' -- "$p" 2>/dev/null); then echo "$p cannot be examined"; return; fi
    if [ "$uid" != 0 ]; then echo "$p is owned by uid $uid, not root"; return; fi
    if (( 8#$mode & 8#022 )) && ! { [ -d "$p" ] && (( 8#$mode & 8#1000 )) && [ "$below_uid" = 0 ]; }; then
      who=others; (( 8#$mode & 8#020 )) && who=group; (( (8#$mode & 8#022) == 8#022 )) && who="group and others"
      printf '%s has mode %04o, writable by %s\n' "$p" "$((8#$mode))" "$who"
      return
    fi
    [ "$p" = / ] && return
    below_uid=$uid
    p=$(dirname "$p")
  done
}

# The wrappers run node as root before every job, and install.sh asks it its
# version: a node another user could replace must be refused before it runs.
NODE=
find_node() { # sets NODE to the real path of the node on PATH (empty: none); exits 2 if root must not run it
  local n why
  NODE=
  n=$(command -v node || true)
  [ -n "$n" ] || return 0
  n=$(readlink -f "$n")
  why=$(untrusted_path "$n")
  if [ -n "$why" ]; then
    echo "install.sh: $n, the node on PATH, could be changed by another user: $why; the wrappers would run it as root before every job. Fix: install Node.js 20 or newer from a package (root's, e.g. /usr/bin/node) and put it first on PATH, or make $n and every directory above it root's and not writable by group or others" >&2
    exit 2
  fi
  NODE=$n
}

node_major() { # the major version of $NODE, or 0
  [ -n "$NODE" ] || { echo 0; return; }
  "$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

# These paths are written into the wrappers, which a shell runs as root: a
# space, quote or $ in one would change what runs, so only plain ones pass.
plain_path() { # plain_path WHAT PATH CODE
  case "$2" in
    /*[!A-Za-z0-9._/+@-]*|[!/]*|'')
      echo "install.sh: $1 \"$2\" must be an absolute path of letters, digits and ._/+@- only; it is written into the wrappers root runs. Fix: pick such a path" >&2
      exit "$3" ;;
  esac
}

# The system packages the prologue and doctor run (conf/prologue.ini [tools]),
# and the seed media tools. Node.js only when missing or older than 20, and
# only from a package that really is 20 or newer.
install_deps() {
  find_node
  if command -v apt-get >/dev/null; then
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      qemu-utils qemu-system-x86 libguestfs-tools genisoimage xorriso mtools dosfstools util-linux libc-bin
    if [ "$(node_major)" -lt 20 ]; then
      local cand
      cand=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2}')
      if [ -n "$cand" ] && [ "$cand" != "(none)" ] && [ "${cand%%.*}" -ge 20 ] 2>/dev/null; then
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs
      else
        echo "install.sh: no Node.js 20 or newer package here (apt offers ${cand:-none}). Add one, e.g. NodeSource's node_20.x repository or nodejs.org's binaries, then run ./install.sh again" >&2
        exit 2
      fi
    fi
  elif command -v dnf >/dev/null; then
    # dnf installs by file, so one list fits RHEL, Rocky, Alma and Fedora whatever the package names.
    run dnf install -y /usr/bin/qemu-img /usr/bin/guestfish /usr/bin/xorriso /usr/bin/mcopy /usr/sbin/mkfs.vfat /usr/bin/prlimit /usr/bin/getent
    run dnf install -y qemu-kvm
    if [ "$(node_major)" -lt 20 ]; then
      if dnf module list nodejs 2>/dev/null | grep -Eq '^nodejs +(2[0-9]|[3-9][0-9]) '; then
        run dnf module install -y nodejs:20/common
      else
        echo "install.sh: no Node.js 20 or newer package here. Add one (nodejs.org binaries, or NodeSource's rpm repository), then run ./install.sh again" >&2
        exit 2
      fi
    fi
  else
    echo "install.sh: --deps knows apt-get and dnf, and this system has neither; install the packages named in --help by hand" >&2
    exit 2
  fi
}

if [ "$DEPS" = 1 ]; then install_deps; fi

plain_path --prefix "$PREFIX" 1
plain_path --torque-home "$TORQUE_HOME" 1
plain_path --config "$CONFIG_DIR" 1
[ -z "$SUBMIT_FILTER" ] || plain_path --submit-filter "$SUBMIT_FILTER" 1
plain_path --bin-dir "$BIN_DIR" 1
if [ "$SLURM" = 1 ]; then
  plain_path --slurm-conf "$SLURM_CONF_FILE" 1
  [ -z "$SLURM_PREFIX" ] || plain_path --slurm-prefix "$SLURM_PREFIX" 1
  if [ -n "$SUBMIT_FILTER" ]; then echo "install.sh: --submit-filter is Torque's qsub filter; with --slurm, job_submit.lua checks requests at sbatch. Fix: drop --submit-filter" >&2; exit 1; fi
elif [ "$EDIT_SLURM" = 1 ] || [ -n "$SLURM_PREFIX" ]; then
  echo "install.sh: --edit-slurm-conf and --slurm-prefix go with --slurm (see --help)" >&2
  exit 1
fi
[ -z "$TORQUE_PREFIX" ] || plain_path --torque-prefix "$TORQUE_PREFIX" 1

find_node
[ -n "$NODE" ] || { echo "install.sh: node not found; install Node.js 20 or newer (./install.sh --deps does)" >&2; exit 2; }
plain_path "node (on PATH)" "$NODE" 2
# The wrappers clear the environment with env -i; it runs as root too.
ENV_BIN=$(readlink -f /usr/bin/env || true)
why=$( [ -n "$ENV_BIN" ] && untrusted_path "$ENV_BIN" || echo "/usr/bin/env is missing")
if [ -n "$why" ]; then
  echo "install.sh: the wrappers start node through /usr/bin/env -i, and $why. Fix: reinstall coreutils so that /usr/bin/env is root's and not writable by group or others" >&2
  exit 2
fi
plain_path "env" "$ENV_BIN" 2
if [ "$(node_major)" -lt 20 ]; then
  echo "install.sh: $NODE is Node.js $("$NODE" --version); vtorque-prologue needs 20 or newer (./install.sh --deps installs it where a package exists)" >&2
  exit 2
fi

# Writes a file only if its content differs, so a second install changes nothing.
put() { # put MODE DEST  (content on stdin)
  local mode=$1 dest=$2 tmp
  tmp=$(mktemp)
  cat > "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then rm -f "$tmp"; return 0; fi
  if [ "$DRY" = 1 ]; then echo "would: write $dest (mode $mode)"; rm -f "$tmp"; return 0; fi
  install -D -m "$mode" -o root -g root "$tmp" "$dest"
  rm -f "$tmp"
  echo "wrote $dest"
}

P=$ROOT$PREFIX
MOM=$ROOT$TORQUE_HOME/mom_priv
CONF=$ROOT$CONFIG_DIR
HOOKS=(prologue prologue.parallel epilogue epilogue.parallel)
LOGROTATE=$ROOT$LOGROTATE_DIR/vtorque-prologue

# A value from the [paths] of the installed ini, or the default: an admin who
# moved the cache gets their directory made, not ours.
ini_get() { # ini_get SECTION KEY DEFAULT
  ini_get_in "$CONF/prologue.ini" "$@"
}
ini_get_in() { # ini_get_in FILE SECTION KEY DEFAULT
  local v="" file=$1
  shift
  if [ -f "$file" ]; then
    v=$(awk -v sec="$1" -v key="$2" '
      # As the ini package reads it: [section], key = value, ; or # starts a comment.
      /^[ \t]*\[/ { ins = ($0 ~ "^[ \t]*\\[" sec "\\]"); next }
      ins && /^[ \t]*[^;# \t]/ {
        k = $0; sub(/[ \t]*=.*/, "", k); sub(/^[ \t]+/, "", k)
        if (k == key) { v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]*[;#].*$/, "", v); sub(/[ \t]+$/, "", v); print "=" v; exit }
      }' "$file")
  fi
  # "=" marks a key that is there, so "log_file =" (log to stderr) is not the default.
  if [ -n "$v" ]; then echo "${v#=}"; else echo "$3"; fi
}

# Creates a root-owned directory, or makes an existing one root's and not
# writable by others; leaves alone one that is already safe (its mode is the
# admin's choice), so a second run changes nothing.
ensure_dir() { # ensure_dir MODE DIR
  local mode=$1 dir=$2
  if [ ! -d "$dir" ]; then
    run install -d -o root -g root -m "$mode" "$dir"
    [ "$DRY" = 1 ] || echo "created $dir (root, $mode)"
  elif [ "$(stat -c %u "$dir")" != 0 ] || [ $(( 0$(stat -c %a "$dir") & 022 )) != 0 ]; then
    run chown root:root "$dir"
    run chmod "$mode" "$dir"
    [ "$DRY" = 1 ] || echo "fixed $dir: now root's, mode $mode (others could change what root trusts)"
  fi
}

# Torque's client tools. pbs_mom gives the prologue PATH=/bin:/usr/bin, so
# [tools] names them by absolute path; the shipped defaults assume Torque's
# own default prefix, /usr/local, which many sites do not use.
DEFAULT_QSTAT=$(ini_get_in "$SRC/conf/prologue.ini" tools qstat /usr/local/bin/qstat)
DEFAULT_PBSNODES=$(ini_get_in "$SRC/conf/prologue.ini" tools pbsnodes /usr/local/bin/pbsnodes)
TORQUE_BIN=
TORQUE_FROM=

is_plain() { case "$1" in /*[!A-Za-z0-9._/+@-]*|[!/]*|'') return 1 ;; esac; }
torque_bin_has_tools() { [ -f "$ROOT$1/qstat" ] && [ -x "$ROOT$1/qstat" ] && [ -f "$ROOT$1/pbsnodes" ] && [ -x "$ROOT$1/pbsnodes" ]; }

# Sets TORQUE_BIN (the directory holding qstat and pbsnodes, as the node
# sees it) and TORQUE_FROM (how it was found), or leaves them empty. In order:
# --torque-prefix; the running pbs_mom, whose pid Torque keeps in
# mom_priv/mom.lock (src/resmom/mom_main.c) and which make install puts in
# PREFIX/sbin, beside PREFIX/bin; qstat on PATH. Root runs what is found, so a
# tool that someone else could change is not taken.
find_torque() {
  local pid exe dir why
  TORQUE_BIN= TORQUE_FROM=
  if [ -n "$TORQUE_PREFIX" ]; then
    if ! torque_bin_has_tools "$TORQUE_PREFIX/bin"; then
      echo "install.sh: --torque-prefix $TORQUE_PREFIX: $ROOT$TORQUE_PREFIX/bin has no executable qstat and pbsnodes. Fix: give the prefix Torque was built with (./configure --prefix), the directory holding bin/qstat" >&2
      exit 1
    fi
    if [ -z "$ROOT" ]; then
      why=$(untrusted_path "$(readlink -f "$TORQUE_PREFIX/bin/qstat")")$(untrusted_path "$(readlink -f "$TORQUE_PREFIX/bin/pbsnodes")")
      if [ -n "$why" ]; then
        echo "install.sh: --torque-prefix $TORQUE_PREFIX: the prologue runs its qstat and pbsnodes as root, and $why. Fix: make them and every directory above them root's and not writable by group or others" >&2
        exit 2
      fi
    fi
    TORQUE_BIN=$TORQUE_PREFIX/bin TORQUE_FROM="--torque-prefix $TORQUE_PREFIX"
    return 0
  fi
  # A staged root is for another node: this machine's Torque says nothing about it.
  [ -z "$ROOT" ] || return 0
  if [ -f "$MOM/mom.lock" ] && read -r pid < "$MOM/mom.lock" 2>/dev/null && [[ "$pid" =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pbs_mom ]; then
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    dir=$(dirname "$(dirname "$exe")")/bin
    if [ -n "$exe" ] && is_plain "$dir" && torque_bin_has_tools "$dir"; then
      why=$(untrusted_path "$(readlink -f "$dir/qstat")")$(untrusted_path "$(readlink -f "$dir/pbsnodes")")
      if [ -z "$why" ]; then TORQUE_BIN=$dir TORQUE_FROM="the running pbs_mom (pid $pid, $exe)"; return 0; fi
      echo "install.sh: warning: not using the qstat and pbsnodes in $dir beside the running pbs_mom: $why" >&2
    fi
  fi
  exe=$(command -v qstat 2>/dev/null || true)
  case "$exe" in /*) ;; *) return 0 ;; esac
  dir=$(dirname "$exe")
  if is_plain "$dir" && torque_bin_has_tools "$dir"; then
    why=$(untrusted_path "$(readlink -f "$dir/qstat")")$(untrusted_path "$(readlink -f "$dir/pbsnodes")")
    if [ -z "$why" ]; then TORQUE_BIN=$dir TORQUE_FROM="qstat on PATH"; return 0; fi
    echo "install.sh: warning: not using the qstat and pbsnodes found on PATH in $dir: $why" >&2
  fi
}

warn_no_torque() {
  echo "install.sh: warning: Torque's qstat and pbsnodes were not found (no --torque-prefix$([ -n "$ROOT" ] && echo ", and a staged root says nothing of the node's Torque" || echo ", no running pbs_mom in $TORQUE_HOME/mom_priv/mom.lock, no qstat on PATH")); [tools] keeps qstat = $1 and pbsnodes = $2. Fix: run install.sh again with --torque-prefix DIR, or set [tools] qstat and pbsnodes in $CONFIG_DIR/prologue.ini" >&2
}

# The shipped ini with [tools] qstat and pbsnodes set: what a new install
# writes, and what prologue.ini.new holds beside an admin's own ini.
shipped_ini() { # shipped_ini QSTAT PBSNODES
  awk -v q="$1" -v p="$2" '
    /^[ \t]*\[/ { ins = ($0 ~ /^[ \t]*\[tools\]/) }
    ins && /^qstat = / { print "qstat = " q; next }
    ins && /^pbsnodes = / { print "pbsnodes = " p; next }
    { print }' "$SRC/conf/prologue.ini"
}

# FILE with [tools] qstat and/or pbsnodes set (an empty value: that key is left
# as it is); a key the section lacks is added to it, a missing section at the end.
ini_with_tools() { # ini_with_tools FILE QSTAT PBSNODES
  awk -v q="$2" -v p="$3" '
    function flush() {
      if (q != "" && !dq) print "qstat = " q
      if (p != "" && !dp) print "pbsnodes = " p
      dq = dp = 1
    }
    /^[ \t]*\[/ { if (ins) flush(); ins = ($0 ~ /^[ \t]*\[tools\][ \t]*$/); if (ins) seen = 1; print; next }
    ins && q != "" && /^[ \t]*qstat[ \t]*=/ { print "qstat = " q; dq = 1; next }
    ins && p != "" && /^[ \t]*pbsnodes[ \t]*=/ { print "pbsnodes = " p; dp = 1; next }
    { print }
    END { if (ins) flush(); if (!seen && (q != "" || p != "")) { print ""; print "[tools]"; flush() } }' "$1"
}

# Installs the ini, or keeps the admin's. Torque's tools go into a new ini;
# in an existing one only a key still at the shipped default is changed.
install_ini() {
  local ini=$CONF/prologue.ini q p nq= np=
  if [ "$SLURM" = 1 ]; then install_ini_slurm; return; fi
  if [ ! -f "$ini" ]; then
    find_torque
    q=$DEFAULT_QSTAT p=$DEFAULT_PBSNODES
    [ -z "$TORQUE_BIN" ] || q=$TORQUE_BIN/qstat p=$TORQUE_BIN/pbsnodes
    put 0644 "$ini" < <(shipped_ini "$q" "$p")
    if [ -n "$TORQUE_BIN" ]; then echo "Torque: [tools] qstat = $q, pbsnodes = $p (found through $TORQUE_FROM)"; else warn_no_torque "$q" "$p"; fi
    return 0
  fi
  q=$(ini_get tools qstat "$DEFAULT_QSTAT")
  p=$(ini_get tools pbsnodes "$DEFAULT_PBSNODES")
  if [ "$q" = "$DEFAULT_QSTAT" ] || [ "$p" = "$DEFAULT_PBSNODES" ]; then
    find_torque
    if [ -z "$TORQUE_BIN" ]; then
      warn_no_torque "$q" "$p"
    else
      [ "$q" != "$DEFAULT_QSTAT" ] || [ "$TORQUE_BIN/qstat" = "$q" ] || nq=$TORQUE_BIN/qstat
      [ "$p" != "$DEFAULT_PBSNODES" ] || [ "$TORQUE_BIN/pbsnodes" = "$p" ] || np=$TORQUE_BIN/pbsnodes
      if [ -n "$nq$np" ]; then
        put "$(stat -c %a "$ini")" "$ini" < <(ini_with_tools "$ini" "$nq" "$np")
        echo "Torque: set${nq:+ [tools] qstat = $nq}${np:+ [tools] pbsnodes = $np} in $ini, where the default was (found through $TORQUE_FROM); your other settings are as they were"
        q=${nq:-$q} p=${np:-$p}
      fi
    fi
  fi
  if [ -n "$TORQUE_PREFIX" ] && [ "$q $p" != "$TORQUE_PREFIX/bin/qstat $TORQUE_PREFIX/bin/pbsnodes" ]; then
    echo "Torque: kept your [tools] qstat = $q, pbsnodes = $p in $ini; --torque-prefix changes only keys at their defaults"
  fi
  if ! cmp -s <(shipped_ini "$q" "$p") "$ini"; then
    put 0644 "$CONF/prologue.ini.new" < <(shipped_ini "$q" "$p")
    echo "kept your $ini; the shipped one is $ini.new"
  fi
}

# stdin with KEY = VALUE in [SECTION]: its line replaced where the section has
# one, else added at the section's end, else the section added at the end.
ini_set() { # ini_set SECTION KEY VALUE  (a filter)
  # Blank lines at a section's end are held, so an added key goes above them, next to its section's keys.
  awk -v sec="$1" -v key="$2" -v val="$3" '
    function add() { if (!done) print key " = " val; done = 1 }
    function flush() { printf "%s", held; held = "" }
    /^[ \t]*\[/ { if (ins) add(); flush(); ins = ($0 ~ "^[ \t]*\\[" sec "\\][ \t]*$"); if (ins) seen = 1; print; next }
    ins && /^[ \t]*$/ { held = held $0 "\n"; next }
    { flush() }
    ins && !done && $0 ~ "^[ \t]*" key "[ \t]*=" { print key " = " val; done = 1; next }
    { print }
    END { if (ins) add(); flush(); if (!seen) { print ""; print "[" sec "]"; add() } }'
}

# Slurm's clients, found as Torque's are: --slurm-prefix, the running slurmd
# (make install puts slurmd in PREFIX/sbin, beside PREFIX/bin), scontrol on
# PATH. Sets SLURM_BIN and SLURM_FROM, or leaves them empty. Root runs them,
# so tools someone else could change are not taken.
DEFAULT_SCONTROL=$(ini_get_in "$SRC/conf/prologue.ini" tools scontrol /usr/bin/scontrol)
DEFAULT_SCANCEL=$(ini_get_in "$SRC/conf/prologue.ini" tools scancel /usr/bin/scancel)
SLURM_BIN=
SLURM_FROM=
slurm_bin_has_tools() { [ -f "$ROOT$1/scontrol" ] && [ -x "$ROOT$1/scontrol" ] && [ -f "$ROOT$1/scancel" ] && [ -x "$ROOT$1/scancel" ]; }
slurm_tools_trusted() { untrusted_path "$(readlink -f "$1/scontrol")"; untrusted_path "$(readlink -f "$1/scancel")"; }
find_slurm() {
  local d pid exe dir why
  SLURM_BIN= SLURM_FROM=
  if [ -n "$SLURM_PREFIX" ]; then
    if ! slurm_bin_has_tools "$SLURM_PREFIX/bin"; then
      echo "install.sh: --slurm-prefix $SLURM_PREFIX: $ROOT$SLURM_PREFIX/bin has no executable scontrol and scancel. Fix: give the prefix Slurm was installed with, the directory holding bin/scontrol" >&2
      exit 1
    fi
    if [ -z "$ROOT" ]; then
      why=$(slurm_tools_trusted "$SLURM_PREFIX/bin")
      if [ -n "$why" ]; then echo "install.sh: --slurm-prefix $SLURM_PREFIX: the Prolog runs its scontrol and scancel as root, and $why. Fix: make them and every directory above them root's and not writable by group or others" >&2; exit 2; fi
    fi
    SLURM_BIN=$SLURM_PREFIX/bin SLURM_FROM="--slurm-prefix $SLURM_PREFIX"
    return 0
  fi
  [ -z "$ROOT" ] || return 0
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = slurmd ] || continue
    pid=${d#/proc/}
    exe=$(readlink "$d/exe" 2>/dev/null || true)
    dir=$(dirname "$(dirname "$exe")")/bin
    if [ -n "$exe" ] && is_plain "$dir" && slurm_bin_has_tools "$dir"; then
      why=$(slurm_tools_trusted "$dir")
      if [ -z "$why" ]; then SLURM_BIN=$dir SLURM_FROM="the running slurmd (pid $pid, $exe)"; return 0; fi
      echo "install.sh: warning: not using the scontrol and scancel in $dir beside the running slurmd: $why" >&2
    fi
    break
  done
  exe=$(command -v scontrol 2>/dev/null || true)
  case "$exe" in /*) ;; *) return 0 ;; esac
  dir=$(dirname "$exe")
  if is_plain "$dir" && slurm_bin_has_tools "$dir"; then
    why=$(slurm_tools_trusted "$dir")
    if [ -z "$why" ]; then SLURM_BIN=$dir SLURM_FROM="scontrol on PATH"; return 0; fi
    echo "install.sh: warning: not using the scontrol and scancel found on PATH in $dir: $why" >&2
  fi
}

# The shipped ini for a Slurm node: [batch] system = slurm and Slurm's tools.
shipped_slurm_ini() { # shipped_slurm_ini SCONTROL SCANCEL
  shipped_ini "$DEFAULT_QSTAT" "$DEFAULT_PBSNODES" | ini_set batch system slurm | ini_set tools scontrol "$1" | ini_set tools scancel "$2"
}

# install_ini for --slurm: a new ini says slurm and names the tools found; an
# existing one gets them only where its keys are at the shipped defaults.
install_ini_slurm() {
  local ini=$CONF/prologue.ini sc sx said="" tmp
  find_slurm
  if [ ! -f "$ini" ]; then
    sc=$DEFAULT_SCONTROL sx=$DEFAULT_SCANCEL
    [ -z "$SLURM_BIN" ] || sc=$SLURM_BIN/scontrol sx=$SLURM_BIN/scancel
    put 0644 "$ini" < <(shipped_slurm_ini "$sc" "$sx")
    if [ -n "$SLURM_BIN" ]; then echo "Slurm: [batch] system = slurm, [tools] scontrol = $sc, scancel = $sx (found through $SLURM_FROM)"; else warn_no_slurm "$sc" "$sx"; fi
    return 0
  fi
  sc=$(ini_get tools scontrol "$DEFAULT_SCONTROL")
  sx=$(ini_get tools scancel "$DEFAULT_SCANCEL")
  tmp=$(mktemp)
  cat "$ini" > "$tmp"
  if [ "$(ini_get batch system torque)" = torque ]; then
    ini_set batch system slurm < "$tmp" > "$tmp.2" && mv "$tmp.2" "$tmp"
    said="$said [batch] system = slurm"
  fi
  if [ -z "$SLURM_BIN" ]; then
    [ "$sc $sx" != "$DEFAULT_SCONTROL $DEFAULT_SCANCEL" ] || warn_no_slurm "$sc" "$sx"
  else
    if [ "$sc" = "$DEFAULT_SCONTROL" ] && [ "$SLURM_BIN/scontrol" != "$sc" ]; then
      sc=$SLURM_BIN/scontrol; ini_set tools scontrol "$sc" < "$tmp" > "$tmp.2" && mv "$tmp.2" "$tmp"; said="$said [tools] scontrol = $sc"
    fi
    if [ "$sx" = "$DEFAULT_SCANCEL" ] && [ "$SLURM_BIN/scancel" != "$sx" ]; then
      sx=$SLURM_BIN/scancel; ini_set tools scancel "$sx" < "$tmp" > "$tmp.2" && mv "$tmp.2" "$tmp"; said="$said [tools] scancel = $sx"
    fi
  fi
  if [ -n "$said" ]; then
    put "$(stat -c %a "$ini")" "$ini" < "$tmp"
    echo "Slurm: set$said in $ini, where the default was${SLURM_FROM:+ (tools found through $SLURM_FROM)}; your other settings are as they were"
  fi
  rm -f "$tmp"
  if ! cmp -s <(shipped_slurm_ini "$sc" "$sx") "$ini" && ! { [ "$DRY" = 1 ] && [ -n "$said" ]; }; then
    put 0644 "$CONF/prologue.ini.new" < <(shipped_slurm_ini "$sc" "$sx")
    echo "kept your $ini; the shipped one is $ini.new"
  fi
}

warn_no_slurm() {
  echo "install.sh: warning: Slurm's scontrol and scancel were not found (no --slurm-prefix$([ -n "$ROOT" ] && echo ", and a staged root says nothing of the node's Slurm" || echo ", no running slurmd, no scontrol on PATH")); [tools] keeps scontrol = $1 and scancel = $2. Fix: run install.sh again with --slurm-prefix DIR, or set [tools] scontrol and scancel in $CONFIG_DIR/prologue.ini" >&2
}

# Users run `vtorque-prologue check --job SCRIPT` by name (every rejection
# message says so), so the commands are linked into a directory on their
# PATH. Root runs them from there too: a directory others can write would let
# them put their own program under that name.
USER_COMMANDS=(vtorque-prologue)
[ -x "$SRC/bin/vsub" ] && USER_COMMANDS+=(vsub)

link_user_commands() {
  local dir=$ROOT$BIN_DIR name link target why
  [ "$BIN_LINKS" = 1 ] || return 0
  if [ -e "$dir" ] || [ -L "$dir" ]; then
    why=$(untrusted_path "$dir")
    if [ -n "$why" ]; then
      echo "install.sh: --bin-dir $dir: $why; anyone who can change it could put their own program where users and root run vtorque-prologue. Fix: make it root's and not writable by group or others, pick another --bin-dir, or --no-bin-links" >&2
      exit 2
    fi
  else
    ensure_dir 0755 "$dir"
  fi
  for name in "${USER_COMMANDS[@]}"; do
    link=$dir/$name
    target=$PREFIX/bin/$name
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then continue; fi
    if [ -e "$link" ] || [ -L "$link" ]; then
      echo "install.sh: $link exists and is not a link to $target ($( [ -L "$link" ] && echo "it points to $(readlink "$link")" || echo "a $(stat -c %F "$link")")); users would not run this install. Fix: remove it if it is an older install's, or pick another --bin-dir, or --no-bin-links" >&2
      exit 2
    fi
    run ln -s "$target" "$link"
    [ "$DRY" = 1 ] || echo "linked $link -> $target: users run $name"
  done
}

unlink_user_commands() {
  local name link
  for name in vtorque-prologue vsub; do
    link=$ROOT$BIN_DIR/$name
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$PREFIX/bin/$name" ]; then run rm -f "$link"; fi
  done
}

# pbs_mom's $job_starter (mom_priv/config). Ours replaces a site's line, which
# is kept as a comment and chained: our starter execs the site's for non-VM jobs.
MOM_CONFIG=$MOM/config
SITE_MARK='# vtorque-prologue chains: '
# The mark installs before this one wrote; still read, and rewritten as SITE_MARK.
OLD_SITE_MARK='# vtorque-prologue: the site job starter, chained by ours: '
OUR_MARK='# vtorque-prologue: job starter, written by install.sh'
STARTER=$PREFIX/bin/vtorque-starter
# pbs_mom reads mom_priv/config into char line[120] with fgets(line, sizeof(line) - 1, ...)
# (Torque 6.1 src/resmom/parse_config.c, read_config()): at most 118 bytes a read. The
# rest of a longer line comes back as a line of its own: a comment's tail becomes a
# bogus static resource (add_static: "gres=e:-starter)" in pbsnodes), a $job_starter
# path is cut. A line we write, its newline included, must fit in one read.
MOM_LINE_MAX=117

# The site's own $job_starter path (or, with nr, the number of the line naming it):
# from our comment if we installed before, else from its live line. Neither our
# path nor the line under OUR_MARK (ours, maybe from an install with another
# --prefix) is the site's.
site_job_starter() { # site_job_starter [nr]
  [ -f "$MOM_CONFIG" ] || return 0
  awk -v mark="$SITE_MARK" -v old="$OLD_SITE_MARK" -v ourmark="$OUR_MARK" -v ours="$STARTER" -v what="${1:-path}" '
    function path(l) { sub(/^[ \t]*\$job_starter[ \t]+/, "", l); sub(/[ \t]+$/, "", l); return l }
    function say(l) { print (what == "nr" ? NR : path(l)); exit }
    index($0, ourmark) == 1 { skip = 1; next }
    skip && /^[ \t]*\$job_starter[ \t]/ { skip = 0; next }
    { skip = 0 }
    index($0, mark) == 1 { say(substr($0, length(mark) + 1)) }
    index($0, old) == 1 { say(substr($0, length(old) + 1)) }
    /^[ \t]*\$job_starter[ \t]/ && path($0) != ours { say($0) }
  ' "$MOM_CONFIG"
}

# mom_priv/config as install.sh leaves it: every site $job_starter line kept as
# a SITE_MARK comment, our comment and $job_starter last. A live line naming our
# starter is ours, not the site's: it goes.
job_starter_config() {
  if [ -f "$MOM_CONFIG" ]; then
    awk -v mark="$SITE_MARK" -v old="$OLD_SITE_MARK" -v ours="$OUR_MARK" -v starter="$STARTER" '
      index($0, ours) == 1 { skip = 1; next }
      skip && /^[ \t]*\$job_starter[ \t]/ { skip = 0; next }
      { skip = 0 }
      index($0, mark) == 1 { print; next }
      index($0, old) == 1 { print mark substr($0, length(old) + 1); next }
      /^[ \t]*\$job_starter[ \t]/ { l = $0; sub(/^[ \t]*\$job_starter[ \t]+/, "", l); sub(/[ \t]+$/, "", l); if (l != starter) print mark $0; next }
      { print }' "$MOM_CONFIG"
  fi
  echo "$OUR_MARK; runs VM jobs in their VM"
  echo "\$job_starter $STARTER"
}

# Why the site's starter SITE leads back to ours, or nothing. Chained, it would
# exec ours again for every non-VM job, in a loop. SITE is ours when its path
# resolves to a file named vtorque-starter (a link to ours), or when the file
# mentions vtorque-starter: a wrapper that execs ours, or a copy of ours (its
# BUNDLE line, which install.sh fills in, names dist/vtorque-starter.cjs). A
# wrapper that reaches ours only through a further file is not followed.
our_starter_behind() { # our_starter_behind SITE
  local real hit
  real=$(readlink -m -- "$ROOT$1")
  case $real in */vtorque-starter) echo "it is $real"; return ;; esac
  # Only a regular file is read: a FIFO there would block install.sh.
  [ -f "$real" ] || return 0
  hit=$(grep -naF -m1 vtorque-starter -- "$real" 2>/dev/null | LC_ALL=C tr -cd '[:print:]' | cut -c1-100 || true)
  [ -z "$hit" ] || echo "$real mentions vtorque-starter (line ${hit%%:*}: ${hit#*:})"
}

# Refuses (exit 2), before install.sh writes anything, a mom_priv/config that
# install_job_starter would make wrong: a starter run as root, a chain back to
# our own starter, or a line pbs_mom would read in pieces (MOM_LINE_MAX).
check_job_starter() {
  local site why n len line over what fix
  if [ -f "$MOM_CONFIG" ] && grep -Eiq '^[[:space:]]*\$job_starter_run_privileged[[:space:]]+(true|1|yes|on)' "$MOM_CONFIG"; then
    echo "install.sh: $MOM_CONFIG sets \$job_starter_run_privileged, so pbs_mom would run the job starter as root with the job's environment; vtorque's starter must run as the job owner. Fix: remove that line (or set it to false), then run ./install.sh again" >&2
    exit 2
  fi
  site=$(site_job_starter)
  if [ -n "$site" ]; then
    plain_path "the site's \$job_starter in $MOM_CONFIG" "$site" 2
    why=$(our_starter_behind "$site")
    if [ -n "$why" ]; then
      n=$(site_job_starter nr)
      echo "install.sh: the site's \$job_starter $site (line $n of $MOM_CONFIG) leads back to vtorque's own starter: $why. Chained, it would exec ours again for every non-VM job, in a loop (vtorque-starter -> $site -> vtorque-starter ...); nothing was written. Fix: make line $n name the site's real starter (what $site runs besides ours), or delete that line if $site only runs ours; then run ./install.sh again" >&2
      exit 2
    fi
  fi
  # Only the lines install.sh writes or rewrites: our two, and the site's $job_starter lines as comments.
  read -r len n line < <(job_starter_config | LC_ALL=C awk -v max="$MOM_LINE_MAX" -v mark="$SITE_MARK" -v ours="$OUR_MARK" '
    (index($0, mark) == 1 || index($0, ours) == 1 || /^\$job_starter /) && length($0) > max { print length($0), NR, $0; exit }') || true
  [ -n "${len:-}" ] || return 0
  over=$((len - MOM_LINE_MAX))
  if [ "$line" = "\$job_starter $STARTER" ]; then
    what="our \$job_starter" fix="install with a --prefix of at most $((${#PREFIX} - over)) bytes (--prefix $PREFIX is ${#PREFIX})"
  else
    what="the site's \$job_starter line kept as a comment" fix="name the site's starter by a path at least $over bytes shorter in its \$job_starter line (e.g. a link in a root-owned directory), then run ./install.sh again"
  fi
  echo "install.sh: $MOM_CONFIG would get a line of $len bytes, $what (line $n: \"$line\"); pbs_mom reads at most $MOM_LINE_MAX bytes of a line and its newline (char line[120], fgets(line, sizeof(line) - 1) in Torque's read_config) and takes the rest as a line of its own; nothing was written. Fix: $fix" >&2
  exit 2
}

# Asks a running pbs_mom to reread mom_priv/config (its pid is in mom_priv/mom.lock).
reload_mom() {
  local pid
  [ -z "$ROOT" ] || { echo "staged: on the node, send pbs_mom SIGHUP (or restart it) to read $TORQUE_HOME/mom_priv/config"; return 0; }
  [ -f "$MOM/mom.lock" ] || { echo "pbs_mom is not running here; it reads $MOM_CONFIG when it starts"; return 0; }
  read -r pid < "$MOM/mom.lock" || true
  case "$pid" in ''|*[!0-9]*) echo "install.sh: $MOM/mom.lock holds no pid; restart pbs_mom so that it reads $MOM_CONFIG" >&2; return 0 ;; esac
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = pbs_mom ]; then
    run kill -HUP "$pid"
    [ "$DRY" = 1 ] || echo "asked pbs_mom (pid $pid) to reread $MOM_CONFIG"
  else
    echo "pbs_mom is not running (mom.lock names pid $pid); it reads $MOM_CONFIG when it starts"
  fi
}

# pbs_mom's $source_login_batch / $source_login_interactive as the starter must
# apply them: pbs_mom overwrites the shell's argv[0] ("-bash" for a login shell)
# with the starter's path, so the starter names the shell itself. The last line
# wins; the name matches in any case (read_config's strcasecmp, as
# src/torque/mom-config.ts reads $prologalarm), and values read as pbs_mom's
# setbool() does (parse_config.c): t/y/1 or on, f/n/0 or off; anything else
# leaves Torque's default, true.
mom_login_setting() {
  local v=true
  [ -f "$MOM_CONFIG" ] || { echo "$v"; return 0; }
  v=$(awk -v key="\$$1" '
    tolower($1) == key { x = $2; c = substr(x, 1, 1)
      if (c ~ /[tTyY1]/ || tolower(x) == "on") v = "true"; else if (c ~ /[fFnN0]/ || tolower(x) == "off") v = "false" }
    END { print (v == "" ? "true" : v) }' "$MOM_CONFIG")
  echo "$v"
}

install_job_starter() {
  local site new tmp chained
  # check_job_starter has refused what this must not write.
  site=$(site_job_starter)
  put 0755 "$P/bin/vtorque-starter" < <(sed -e "s|^JOB_DIR=.*|JOB_DIR=$JOB_DIR|" -e "s|^NODE=.*|NODE=$NODE|" \
    -e "s|^BUNDLE=.*|BUNDLE=$PREFIX/dist/vtorque-starter.cjs|" -e "s|^SITE_STARTER=.*|SITE_STARTER=$site|" \
    -e "s|^LOGIN_BATCH=.*|LOGIN_BATCH=$(mom_login_setting source_login_batch)|" \
    -e "s|^LOGIN_INTERACTIVE=.*|LOGIN_INTERACTIVE=$(mom_login_setting source_login_interactive)|" "$SRC/bin/vtorque-starter")
  tmp=$(mktemp)
  job_starter_config > "$tmp"
  if [ -f "$MOM_CONFIG" ] && cmp -s "$tmp" "$MOM_CONFIG"; then rm -f "$tmp"; return 0; fi
  chained=""
  [ -z "$site" ] || chained=" (the site's $site now starts non-VM jobs through it)"
  if [ "$DRY" = 1 ]; then echo "would: set \$job_starter $STARTER in $MOM_CONFIG$chained"; rm -f "$tmp"; return 0; fi
  new=$(stat -c %a "$MOM_CONFIG" 2>/dev/null || echo 644)
  install -D -m "$new" -o root -g root "$tmp" "$MOM_CONFIG"
  rm -f "$tmp"
  echo "wrote $MOM_CONFIG: \$job_starter $STARTER$chained"
  reload_mom
}

uninstall_job_starter() {
  local tmp
  [ -f "$MOM_CONFIG" ] && grep -qF "$OUR_MARK" "$MOM_CONFIG" || return 0
  tmp=$(mktemp)
  awk -v mark="$SITE_MARK" -v old="$OLD_SITE_MARK" -v ours="$OUR_MARK" '
    index($0, ours) == 1 { skip = 1; next }
    skip && /^[ \t]*\$job_starter[ \t]/ { skip = 0; next }
    { skip = 0 }
    index($0, mark) == 1 { print substr($0, length(mark) + 1); next }
    index($0, old) == 1 { print substr($0, length(old) + 1); next }
    { print }' "$MOM_CONFIG" > "$tmp"
  if [ "$DRY" = 1 ]; then echo "would: restore $MOM_CONFIG without our \$job_starter"; rm -f "$tmp"; return 0; fi
  install -m "$(stat -c %a "$MOM_CONFIG")" -o root -g root "$tmp" "$MOM_CONFIG"
  rm -f "$tmp"
  echo "restored $MOM_CONFIG: our \$job_starter is gone$(grep -q '^[[:space:]]*\$job_starter[[:space:]]' "$MOM_CONFIG" && echo ", the site's is back")"
  reload_mom
}

# qemu runs as this account, never root and never the job owner ([launch] user).
ensure_launch_account() {
  local user group
  user=$(ini_get launch user vtorque-launch)
  group=$(ini_get launch group "$user")
  if [ -n "$ROOT" ]; then
    echo "staged: on the node, create the launch account: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin $user (install.sh does it there)"
    return 0
  fi
  if ! getent passwd "$user" >/dev/null; then
    if [ "$group" = "$user" ]; then
      run useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
    else
      getent group "$group" >/dev/null || run groupadd --system "$group"
      run useradd --system --gid "$group" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
    fi
    [ "$DRY" = 1 ] || echo "created the launch account $user (qemu runs as it)"
  fi
  # /dev/kvm is root:kvm 0660 on most distributions: without the group qemu falls back to TCG.
  if getent group kvm >/dev/null && ! id -nG "$user" 2>/dev/null | tr ' ' '\n' | grep -qx kvm; then
    run usermod -aG kvm "$user"
    [ "$DRY" = 1 ] || echo "added $user to the kvm group"
  fi
}

# ---- Slurm (--slurm) -------------------------------------------------------
SLURM_CONF_PATH=$ROOT$SLURM_CONF_FILE
LUA_DEST=$(dirname "$SLURM_CONF_PATH")/job_submit.lua
LUA_MARK="vtorque-prologue's job_submit.lua"
SLURM_PROLOG=$PREFIX/bin/vtorque-slurm-prolog
SLURM_EPILOG=$PREFIX/bin/vtorque-slurm-epilog
TASK_PROLOG=$PREFIX/bin/vtorque-task-prolog
# Our block in slurm.conf, and the prefix that keeps a site's line it replaces, commented out.
CONF_BEGIN='# vtorque-prologue: begin, written by install.sh --slurm --edit-slurm-conf'
CONF_END='# vtorque-prologue: end'
CONF_WAS='#vtorque-prologue-was# '
# What the Prolog and Epilog read of slurmd's environment (src/slurm/contract.ts
# readSlurmEnv, src/slurm/hook.ts). ${V+"V=$V"} as for Torque's wrappers.
SLURM_VARS=(SLURM_JOB_ID SLURM_JOB_USER SLURM_JOB_UID SLURM_JOB_GID SLURM_JOB_RESTART_COUNT SLURM_JOB_WORK_DIR SLURM_JOB_PARTITION SLURM_JOB_EXIT_CODE SLURM_NODELIST SLURMD_NODENAME SLURM_CONF)

# The value slurm.conf gives KEY (keys are case-insensitive; the last line
# wins), '' when none; lines we commented out do not count.
slurm_conf_get() { # slurm_conf_get KEY
  [ -f "$SLURM_CONF_PATH" ] || return 0
  awk -v key="$(echo "$1" | tr 'A-Z' 'a-z')" '
    /^[ \t]*#/ { next }
    { l = $0; sub(/^[ \t]+/, "", l); k = l; sub(/[ \t]*=.*/, "", k)
      if (tolower(k) == key && l ~ /=/) { v = l; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]+#.*$/, "", v); sub(/[ \t]+$/, "", v) } }
    END { print v }' "$SLURM_CONF_PATH"
}

# Whether a Prolog=/Epilog= value already runs WRAPPER: it is the value, or one of what its glob matches (slurm.conf(5)).
slurm_hook_has() { # slurm_hook_has VALUE WRAPPER
  local f real
  real=$(readlink -f "$ROOT$2" 2>/dev/null || echo "$ROOT$2")
  [ "$1" = "$2" ] && return 0
  case $1 in *[*?[]*) ;; *) return 1 ;; esac
  # Unquoted on purpose: the glob is slurm.conf's, expanded as slurmd would.
  for f in $ROOT$1; do [ "$(readlink -f "$f" 2>/dev/null)" = "$real" ] && return 0; done
  return 1
}

# The least PrologEpilogTimeout for a cold image preparation: [timeouts] total,
# plus three scontrol/scancel calls of [timeouts] qstat to report a failure
# (src/slurm/doctor.ts neededPrologEpilogTimeout says the same).
slurm_timeout() {
  echo $(( $(ini_get timeouts total 240) + 3 * $(ini_get timeouts qstat 10) ))
}

# Sets WANT_<n> (the slurm.conf lines the node needs, merged with the site's
# PrologFlags, JobSubmitPlugins and a longer PrologEpilogTimeout) and
# CONFLICTS (a site's own Prolog=, Epilog=, TaskProlog=, each with how to chain it).
SLURM_KEYS=(Prolog Epilog TaskProlog PrologFlags JobSubmitPlugins PrologEpilogTimeout)
plan_slurm_conf() {
  local v need
  CONFLICTS=()
  WANT=()
  v=$(slurm_conf_get Prolog)
  if [ -z "$v" ] || slurm_hook_has "$v" "$SLURM_PROLOG"; then WANT+=("Prolog=${v:-$SLURM_PROLOG}"); else
    WANT+=("Prolog=$SLURM_PROLOG")
    CONFLICTS+=("slurm.conf has the site's own Prolog=$v. Slurm runs every program a Prolog glob matches: put yours and a link to $SLURM_PROLOG in one root-owned directory, e.g. $(dirname "$SLURM_CONF_FILE")/prolog.d/, and set Prolog=$(dirname "$SLURM_CONF_FILE")/prolog.d/*")
  fi
  v=$(slurm_conf_get Epilog)
  if [ -z "$v" ] || slurm_hook_has "$v" "$SLURM_EPILOG"; then WANT+=("Epilog=${v:-$SLURM_EPILOG}"); else
    WANT+=("Epilog=$SLURM_EPILOG")
    CONFLICTS+=("slurm.conf has the site's own Epilog=$v. As for Prolog: put yours and a link to $SLURM_EPILOG in one root-owned directory, e.g. $(dirname "$SLURM_CONF_FILE")/epilog.d/, and set Epilog=$(dirname "$SLURM_CONF_FILE")/epilog.d/*")
  fi
  v=$(slurm_conf_get TaskProlog)
  if [ -z "$v" ] || [ "$v" = "$TASK_PROLOG" ]; then WANT+=("TaskProlog=$TASK_PROLOG"); else
    WANT+=("TaskProlog=$TASK_PROLOG")
    CONFLICTS+=("slurm.conf has the site's own TaskProlog=$v. slurmd runs one TaskProlog: set TaskProlog=$TASK_PROLOG and run yours from a copy of it (what a TaskProlog prints, both print), or have yours run $TASK_PROLOG and pass on its output")
  fi
  v=$(slurm_conf_get PrologFlags)
  if echo ",$v," | tr 'A-Z' 'a-z' | grep -q ',alloc,'; then WANT+=("PrologFlags=$v"); else WANT+=("PrologFlags=${v:+$v,}Alloc"); fi
  v=$(slurm_conf_get JobSubmitPlugins)
  if echo ",$v," | tr 'A-Z' 'a-z' | grep -Eq ',(job_submit/)?lua,'; then WANT+=("JobSubmitPlugins=$v"); else WANT+=("JobSubmitPlugins=${v:+$v,}lua"); fi
  v=$(slurm_conf_get PrologEpilogTimeout)
  need=$(slurm_timeout)
  if [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge "$need" ] && [ "$v" -lt 65534 ]; then WANT+=("PrologEpilogTimeout=$v"); else WANT+=("PrologEpilogTimeout=$need"); fi
}

# slurm.conf with WANT applied: every site line of those keys kept commented out
# (CONF_WAS), our earlier block dropped, a new block at the end.
slurm_conf_edited() {
  local keys
  keys=$(printf '%s\n' "${SLURM_KEYS[@]}" | tr 'A-Z' 'a-z' | paste -sd, -)
  awk -v keys="$keys" -v begin="$CONF_BEGIN" -v end="$CONF_END" -v was="$CONF_WAS" '
    BEGIN { n = split(keys, ks, ","); for (i = 1; i <= n; i++) ours[ks[i]] = 1 }
    $0 == begin { skip = 1; next }
    skip { if ($0 == end) skip = 0; next }
    /^[ \t]*#/ { print; next }
    { k = $0; sub(/^[ \t]+/, "", k); sub(/[ \t]*=.*/, "", k); if ((tolower(k) in ours) && $0 ~ /=/) { print was $0; next } print }' "$SLURM_CONF_PATH"
  echo "$CONF_BEGIN"
  printf '%s\n' "${WANT[@]}"
  echo "$CONF_END"
}

# slurm.conf as it was before --edit-slurm-conf: our block gone, the site's lines back.
slurm_conf_restored() {
  awk -v begin="$CONF_BEGIN" -v end="$CONF_END" -v was="$CONF_WAS" '
    $0 == begin { skip = 1; next }
    skip { if ($0 == end) skip = 0; next }
    index($0, was) == 1 { print substr($0, length(was) + 1); next }
    { print }' "$SLURM_CONF_PATH"
}

# Prints the slurm.conf lines the node needs and, with --edit-slurm-conf,
# writes them (a copy of slurm.conf first). Never runs scontrol reconfigure.
wire_slurm_conf() {
  local line key cur missing=0 tmp backup c
  plan_slurm_conf
  echo "slurm.conf ($SLURM_CONF_FILE, the same on every node and on the slurmctld host) needs:"
  for line in "${WANT[@]}"; do
    key=${line%%=*}
    cur=$(slurm_conf_get "$key")
    if [ "$cur" = "${line#*=}" ]; then echo "  $line    (already there)"; else echo "  $line"; missing=1; fi
  done
  if [ "${#CONFLICTS[@]}" -gt 0 ]; then
    for c in "${CONFLICTS[@]}"; do echo "install.sh: $c" >&2; done
    if [ "$EDIT_SLURM" = 1 ]; then
      echo "install.sh: --edit-slurm-conf: $SLURM_CONF_FILE left as it is: a site's own hook is never overwritten. Fix: chain it as said above, then run install.sh --slurm --edit-slurm-conf again" >&2
      exit 2
    fi
  fi
  [ "$missing" = 1 ] || return 0
  if [ "$EDIT_SLURM" = 0 ]; then
    echo "install.sh does not edit slurm.conf unless asked: add these lines by hand (or run again with --edit-slurm-conf), then run: scontrol reconfigure"
    return 0
  fi
  if [ ! -f "$SLURM_CONF_PATH" ]; then
    echo "install.sh: --edit-slurm-conf: $SLURM_CONF_PATH does not exist. Fix: give it with --slurm-conf FILE" >&2
    exit 2
  fi
  backup=$SLURM_CONF_PATH.vtorque-$(date +%Y%m%d%H%M%S)
  if [ "$DRY" = 1 ]; then echo "would: copy $SLURM_CONF_PATH to $backup, then write the lines above into it"; return 0; fi
  tmp=$(mktemp)
  slurm_conf_edited > "$tmp"
  cp -p "$SLURM_CONF_PATH" "$backup"
  install -m "$(stat -c %a "$SLURM_CONF_PATH")" -o "$(stat -c %u "$SLURM_CONF_PATH")" -g "$(stat -c %g "$SLURM_CONF_PATH")" "$tmp" "$SLURM_CONF_PATH"
  rm -f "$tmp"
  echo "wrote $SLURM_CONF_PATH (the site's lines it replaces are kept as comments; the old one is $backup). Copy it to every node if yours are not configless, then run: scontrol reconfigure"
}

# The files slurmd, slurmctld and the job's batch step run.
install_slurm_files() {
  local sub pass="" v vtorque
  for v in "${SLURM_VARS[@]}"; do pass="$pass \${$v+\"$v=\$$v\"}"; done
  for sub in prolog epilog; do
    put 0755 "$P/bin/vtorque-slurm-$sub" <<WRAPPER
#!/bin/sh
# vtorque-prologue Slurm wrapper, written by install.sh --slurm. slurmd runs it
# as root (slurm.conf $( [ $sub = prolog ] && echo Prolog || echo Epilog)=), with no argv and SLURM_* variables.
# node gets a clean environment: whatever else slurmd passes (NODE_OPTIONS,
# LD_PRELOAD, ...) would otherwise change what runs as root.
exec $ENV_BIN -i LANG=C.UTF-8 PATH=/bin:/usr/bin \\
 ${pass# } \\
 $NODE $NODE_FLAGS $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini slurm-$sub "\$@"
WRAPPER
  done
  put 0755 "$P/bin/vtorque-slurm-run" < <(sed -e "s|^JOB_DIR=.*|JOB_DIR=$JOB_DIR|" -e "s|^NODE=.*|NODE=$NODE|" \
    -e "s|^BUNDLE=.*|BUNDLE=$PREFIX/dist/vtorque-starter.cjs|" "$SRC/bin/vtorque-slurm-run")
  put 0755 "$P/bin/vtorque-task-prolog" < <(sed -e "s|^JOB_DIR=.*|JOB_DIR=$JOB_DIR|" "$SRC/conf/slurm/task-prolog")
  # slurmctld runs the check as SlurmUser: its NODE_OPTIONS must not reach node.
  vtorque="$ENV_BIN -u NODE_OPTIONS -u NODE_PATH $NODE $NODE_FLAGS $PREFIX/bin/vtorque-prologue"
  local lua dest=$LUA_DEST
  lua=$(sed -e "s|^local VTORQUE = .*|local VTORQUE = \"$vtorque\"|" -e "s|^local CONFIG = .*|local CONFIG = \"$CONFIG_DIR/prologue.ini\"|" \
    -e "s|^local RUNNER = .*|local RUNNER = \"$PREFIX/bin/vtorque-slurm-run\"|" "$SRC/conf/slurm/job_submit.lua")
  if [ -f "$dest" ] && ! head -n 1 "$dest" | grep -qF "$LUA_MARK"; then
    put 0644 "$dest.vtorque" <<<"$lua"
    echo "install.sh: warning: $dest is the site's own job_submit.lua: kept as it is; ours is beside it as $dest.vtorque. Fix: slurmctld loads one job_submit.lua, so merge them: in ours rename slurm_job_submit to vtorque_job_submit (and drop its last line, return slurm.SUCCESS), load it from yours with dofile(\"$(dirname "$SLURM_CONF_FILE")/job_submit.lua.vtorque\"), and at the start of your slurm_job_submit return its result when it is not slurm.SUCCESS; then scontrol reconfigure" >&2
  else
    put 0644 "$dest" <<<"$lua"
  fi
}

uninstall_slurm() {
  local f
  for f in "$LUA_DEST" "$LUA_DEST.vtorque"; do
    if [ -f "$f" ] && head -n 1 "$f" | grep -qF "$LUA_MARK"; then run rm -f "$f"; fi
  done
  [ -f "$SLURM_CONF_PATH" ] || return 0
  if grep -qxF "$CONF_BEGIN" "$SLURM_CONF_PATH"; then
    if [ "$EDIT_SLURM" = 0 ]; then
      echo "install.sh: $SLURM_CONF_FILE still has our lines (between \"$CONF_BEGIN\" and \"$CONF_END\"); slurmd would fail every job without the Prolog. Fix: run install.sh --uninstall --slurm --edit-slurm-conf, or remove them by hand and uncomment the lines starting \"$CONF_WAS\"; then scontrol reconfigure" >&2
      return 0
    fi
    if [ "$DRY" = 1 ]; then echo "would: remove our lines from $SLURM_CONF_PATH and bring back the site's"; return 0; fi
    local tmp
    tmp=$(mktemp)
    slurm_conf_restored > "$tmp"
    cp -p "$SLURM_CONF_PATH" "$SLURM_CONF_PATH.vtorque-$(date +%Y%m%d%H%M%S)"
    install -m "$(stat -c %a "$SLURM_CONF_PATH")" -o "$(stat -c %u "$SLURM_CONF_PATH")" -g "$(stat -c %g "$SLURM_CONF_PATH")" "$tmp" "$SLURM_CONF_PATH"
    rm -f "$tmp"
    echo "restored $SLURM_CONF_PATH: our lines are gone, the site's are back; run: scontrol reconfigure"
  elif grep -qiE "^[[:space:]]*(Prolog|Epilog|TaskProlog)[[:space:]]*=[[:space:]]*$PREFIX/bin/vtorque-" "$SLURM_CONF_PATH"; then
    echo "install.sh: $SLURM_CONF_FILE still names $PREFIX/bin/vtorque-* in Prolog=, Epilog= or TaskProlog=; slurmd would fail every job. Fix: remove those lines, then scontrol reconfigure" >&2
  fi
}

# mom_priv/config is checked before anything is written: a refusal leaves the node as it was.
[ "$UNINSTALL" = 1 ] || [ "$SLURM" = 1 ] || check_job_starter

if [ "$UNINSTALL" = 1 ]; then
  for h in "${HOOKS[@]}"; do
    if [ -f "$MOM/$h" ] && grep -q 'vtorque-prologue wrapper' "$MOM/$h"; then
      run rm -f "$MOM/$h"
      if [ -f "$MOM/$h.orig" ]; then run mv "$MOM/$h.orig" "$MOM/$h"; fi
    fi
  done
  uninstall_job_starter
  [ "$SLURM" = 0 ] || uninstall_slurm
  unlink_user_commands
  run rm -rf "$P"
  if [ -f "$LOGROTATE" ]; then run rm -f "$LOGROTATE"; fi
  if [ -n "$SUBMIT_FILTER" ] && [ -f "$ROOT$SUBMIT_FILTER" ] && grep -q 'vtorque-prologue submit filter' "$ROOT$SUBMIT_FILTER"; then
    run rm -f "$ROOT$SUBMIT_FILTER"
  fi
  echo "uninstalled; kept $CONF, the image pool, the cache, the logs and the launch account $(ini_get launch user vtorque-launch)"
  exit 0
fi

# A --torque-prefix that holds no Torque is a mistake to say now, whatever the config holds.
[ -z "$TORQUE_PREFIX" ] || find_torque

if [ ! -f "$SRC/dist/vtorque-prologue.cjs" ] || [ ! -f "$SRC/dist/vtorque-heavy.cjs" ] || [ ! -f "$SRC/dist/vendor-execa.cjs" ] || [ ! -f "$SRC/dist/vtorque-starter.cjs" ]; then
  run bash -c "cd '$SRC' && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build"
fi

# The bundles carry every runtime dependency; nothing else from node_modules is needed.
put 0644 "$P/bin/package.json" < "$SRC/bin/package.json"
for f in "$SRC"/dist/*.cjs; do put 0644 "$P/dist/${f##*/}" < "$f"; done
# The commands users and admins run by name start the node vetted above, not
# whichever node is first on the caller's PATH (an older one cannot run them).
for name in "${USER_COMMANDS[@]}"; do
  put 0755 "$P/bin/$name" < <(sed "1s|^#!/usr/bin/env node\$|#!$NODE|" "$SRC/bin/$name")
done

install_ini

# State directories, from the ini's [paths] (the ini was just installed or kept).
ensure_dir 0755 "$ROOT$(ini_get paths image_pool /var/lib/vtorque/images)"
ensure_dir 0755 "$ROOT$(ini_get paths cache_dir /var/cache/vtorque)"
JOB_DIR=$(ini_get paths job_dir /var/lib/vtorque/jobs)
plain_path "[paths] job_dir" "$JOB_DIR" 2
ensure_dir 0755 "$ROOT$JOB_DIR"
# /run is emptied at boot; the prologue makes it again when a job needs it.
ensure_dir 0755 "$ROOT$(ini_get paths ramdisk_dir /run/vtorque/ramdisk)"
LOG_FILE=$(ini_get paths log_file /var/log/vtorque/prologue.log)
if [ -n "$LOG_FILE" ]; then
  # The log names users and jobs: not for everyone.
  ensure_dir 0750 "$ROOT$(dirname "$LOG_FILE")"
  # Each prologue opens the log anew, so plain rotation is safe: no copytruncate.
  put 0644 "$LOGROTATE" <<ROTATE
# vtorque-prologue admin log, written by install.sh
$LOG_FILE {
    weekly
    rotate 8
    compress
    delaycompress
    missingok
    notifempty
}
ROTATE
fi

# What the prologue reads of pbs_mom's environment (src/torque/contract.ts
# readJobEnv). ${V+"V=$V"} passes V when pbs_mom set it, even empty, and
# nothing when it did not.
PBS_VARS=(PBS_MSHOST PBS_NODEFILE PBS_NODENUM PBS_NP PBS_NUM_NODES PBS_NUM_PPN PBS_O_WORKDIR PBS_RESOURCE_NODES)
PASS=""
for v in "${PBS_VARS[@]}"; do PASS="$PASS \${$v+\"$v=\$$v\"}"; done
# node reads no module from anywhere but the bundles, and loads no native addon.
NODE_FLAGS="--no-global-search-paths --no-addons"

if [ "$SLURM" = 1 ]; then
  # A Slurm node: slurmd runs our wrappers as Prolog and Epilog, job_submit.lua wraps VM jobs' scripts; no mom_priv.
  install_slurm_files
  echo "installed in $P; Slurm wrappers $SLURM_PROLOG, $SLURM_EPILOG, $TASK_PROLOG"
  link_user_commands
  ensure_launch_account
  wire_slurm_conf
  HOOKS=()
fi

for h in "${HOOKS[@]}"; do
  sub=${h/./-}
  dest=$MOM/$h
  if [ -f "$dest" ] && ! grep -q 'vtorque-prologue wrapper' "$dest"; then
    run mv "$dest" "$dest.orig"
  fi
  chain=""
  if [ -f "$dest.orig" ] || { [ "$DRY" = 1 ] && [ -f "$dest" ] && ! grep -q 'vtorque-prologue wrapper' "$dest"; }; then
    chain="\"$TORQUE_HOME/mom_priv/$h.orig\" \"\$@\" || exit \$?"
  fi
  put 0500 "$dest" <<WRAPPER
#!/bin/sh
# vtorque-prologue wrapper, written by install.sh. pbs_mom runs it as root.
# node gets a clean environment: whatever else pbs_mom passes (NODE_OPTIONS,
# LD_PRELOAD, ...) would otherwise change what runs as root.
${chain}
exec $ENV_BIN -i LANG=C.UTF-8 PATH=/bin:/usr/bin \\
 ${PASS# } \\
 $NODE $NODE_FLAGS $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini $sub "\$@"
WRAPPER
done
if [ "$SLURM" = 0 ]; then
  echo "installed in $P; wrappers in $MOM"
  link_user_commands
  ensure_launch_account
  install_job_starter
fi

if [ -n "$SUBMIT_FILTER" ]; then
  if [ -f "$ROOT$SUBMIT_FILTER" ] && ! grep -q 'vtorque-prologue submit filter' "$ROOT$SUBMIT_FILTER"; then
    echo "install.sh: $SUBMIT_FILTER exists and is not ours; chain it by hand or pick another path (SUBMITFILTER in torque.cfg)" >&2
    exit 2
  fi
  # qsub runs it as the submitting user, with the script on stdin, and it
  # needs the user's environment (qsub -V, -v NAME). A user's own node
  # settings could only change their own filter, but they must not break it.
  put 0755 "$ROOT$SUBMIT_FILTER" <<FILTER
#!/bin/sh
# vtorque-prologue submit filter, written by install.sh. qsub runs it as the user.
exec $ENV_BIN -u NODE_OPTIONS -u NODE_PATH $NODE $NODE_FLAGS $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini submit-filter "\$@"
FILTER
  # qsub's own order (validate_submit_filter, src/cmds/qsub_functions.c): SUBMITFILTER, <prefix>/libexec/qsub_filter, the legacy path.
  case $SUBMIT_FILTER in
    */libexec/qsub_filter) echo "submit filter: qsub finds $SUBMIT_FILTER by itself when Torque's prefix is ${SUBMIT_FILTER%/libexec/qsub_filter} and torque.cfg names no SUBMITFILTER" ;;
    /usr/local/sbin/torque_submitfilter) echo "submit filter: qsub runs $SUBMIT_FILTER only when torque.cfg names no SUBMITFILTER and <torque prefix>/libexec/qsub_filter does not exist" ;;
    *) echo "submit filter: add 'SUBMITFILTER $SUBMIT_FILTER' to $TORQUE_HOME/torque.cfg on the hosts users run qsub on" ;;
  esac
fi

if [ "$DOCTOR" = 0 ]; then
  exit 0
elif [ -n "$ROOT" ]; then
  echo "doctor skipped: --root stages files whose config names the node's real paths; on the node run: $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini doctor"
  exit 0
elif [ "$DRY" = 1 ]; then
  echo "would: $NODE $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini doctor"
  exit 0
fi
echo "checking the node: vtorque-prologue doctor"
rc=0
"$NODE" "$PREFIX/bin/vtorque-prologue" --config "$CONFIG_DIR/prologue.ini" doctor || rc=$?
if [ "$rc" != 0 ]; then
  echo "install.sh: installed, but doctor found problems (above); fix them, then run: $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini doctor" >&2
  exit 3
fi
