#!/usr/bin/env bash
# Installs vtorque-prologue on a compute node and wires it into pbs_mom's mom_priv.
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
while [ $# -gt 0 ]; do
  case "$1" in
    --submit-filter) SUBMIT_FILTER=$2; shift 2 ;;
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
SITE_MARK='# vtorque-prologue: the site job starter, chained by ours: '
OUR_MARK='# vtorque-prologue: job starter, written by install.sh'
STARTER=$PREFIX/bin/vtorque-starter

# The site's own $job_starter path: from our comment if we installed before, else from its live line.
site_job_starter() {
  [ -f "$MOM_CONFIG" ] || return 0
  awk -v mark="$SITE_MARK" -v ours="$STARTER" '
    index($0, mark) == 1 { l = substr($0, length(mark) + 1); sub(/^[ \t]*\$job_starter[ \t]+/, "", l); sub(/[ \t]+$/, "", l); print l; exit }
    /^[ \t]*\$job_starter[ \t]/ { l = $0; sub(/^[ \t]*\$job_starter[ \t]+/, "", l); sub(/[ \t]+$/, "", l); if (l != ours) { print l; exit } }
  ' "$MOM_CONFIG"
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

install_job_starter() {
  local site new tmp chained
  if [ -f "$MOM_CONFIG" ] && grep -Eiq '^[[:space:]]*\$job_starter_run_privileged[[:space:]]+(true|1|yes|on)' "$MOM_CONFIG"; then
    echo "install.sh: $MOM_CONFIG sets \$job_starter_run_privileged, so pbs_mom would run the job starter as root with the job's environment; vtorque's starter must run as the job owner. Fix: remove that line (or set it to false), then run ./install.sh again" >&2
    exit 2
  fi
  site=$(site_job_starter)
  [ -z "$site" ] || plain_path "the site's \$job_starter in $MOM_CONFIG" "$site" 2
  put 0755 "$P/bin/vtorque-starter" < <(sed -e "s|^JOB_DIR=.*|JOB_DIR=$JOB_DIR|" -e "s|^NODE=.*|NODE=$NODE|" \
    -e "s|^BUNDLE=.*|BUNDLE=$PREFIX/dist/vtorque-starter.cjs|" -e "s|^SITE_STARTER=.*|SITE_STARTER=$site|" "$SRC/bin/vtorque-starter")
  tmp=$(mktemp)
  {
    if [ -f "$MOM_CONFIG" ]; then
      awk -v mark="$SITE_MARK" -v ours="$OUR_MARK" '
        index($0, ours) == 1 { skip = 1; next }
        skip && /^[ \t]*\$job_starter[ \t]/ { skip = 0; next }
        { skip = 0 }
        index($0, mark) == 1 { print; next }
        /^[ \t]*\$job_starter[ \t]/ { print mark $0; next }
        { print }' "$MOM_CONFIG"
    fi
    echo "$OUR_MARK; runs VM jobs in their VM (see $PREFIX/bin/vtorque-starter)"
    echo "\$job_starter $STARTER"
  } > "$tmp"
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
  awk -v mark="$SITE_MARK" -v ours="$OUR_MARK" '
    index($0, ours) == 1 { skip = 1; next }
    skip && /^[ \t]*\$job_starter[ \t]/ { skip = 0; next }
    { skip = 0 }
    index($0, mark) == 1 { print substr($0, length(mark) + 1); next }
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

if [ "$UNINSTALL" = 1 ]; then
  for h in "${HOOKS[@]}"; do
    if [ -f "$MOM/$h" ] && grep -q 'vtorque-prologue wrapper' "$MOM/$h"; then
      run rm -f "$MOM/$h"
      if [ -f "$MOM/$h.orig" ]; then run mv "$MOM/$h.orig" "$MOM/$h"; fi
    fi
  done
  uninstall_job_starter
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
echo "installed in $P; wrappers in $MOM"
link_user_commands
ensure_launch_account
install_job_starter

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
