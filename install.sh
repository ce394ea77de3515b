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
  --root DIR          install into a staging root instead of / (doctor is skipped:
                      the staged config names the node's real paths)
  --deps              first install the system packages with apt-get or dnf:
                      qemu-img, libguestfs tools, genisoimage or xorriso, mtools,
                      dosfstools, qemu-system, and Node.js if missing or older than 20
  --submit-filter FILE  also write Torque's submit filter wrapper at FILE (mode 0755), for
                      hosts where users run qsub: FILE is /usr/local/sbin/torque_submitfilter
                      by default in Torque, or what SUBMITFILTER in TORQUE_HOME/torque.cfg names
  --no-doctor         do not run doctor at the end
  --dry-run           print every action, change nothing
  --uninstall         remove the wrappers (restoring any .orig), the program and the
                      logrotate snippet; keeps config, images, cache and logs
  -h, --help          this text

Examples:
  sudo ./install.sh --deps
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
while [ $# -gt 0 ]; do
  case "$1" in
    --submit-filter) SUBMIT_FILTER=$2; shift 2 ;;
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
  local v=""
  if [ -f "$CONF/prologue.ini" ]; then
    v=$(awk -v sec="$1" -v key="$2" '
      # As the ini package reads it: [section], key = value, ; or # starts a comment.
      /^[ \t]*\[/ { ins = ($0 ~ "^[ \t]*\\[" sec "\\]"); next }
      ins && /^[ \t]*[^;# \t]/ {
        k = $0; sub(/[ \t]*=.*/, "", k); sub(/^[ \t]+/, "", k)
        if (k == key) { v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]*[;#].*$/, "", v); sub(/[ \t]+$/, "", v); print "=" v; exit }
      }' "$CONF/prologue.ini")
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
  run rm -rf "$P"
  if [ -f "$LOGROTATE" ]; then run rm -f "$LOGROTATE"; fi
  if [ -n "$SUBMIT_FILTER" ] && [ -f "$ROOT$SUBMIT_FILTER" ] && grep -q 'vtorque-prologue submit filter' "$ROOT$SUBMIT_FILTER"; then
    run rm -f "$ROOT$SUBMIT_FILTER"
  fi
  echo "uninstalled; kept $CONF, the image pool, the cache, the logs and the launch account $(ini_get launch user vtorque-launch)"
  exit 0
fi

if [ ! -f "$SRC/dist/vtorque-prologue.cjs" ] || [ ! -f "$SRC/dist/vtorque-heavy.cjs" ] || [ ! -f "$SRC/dist/vendor-execa.cjs" ] || [ ! -f "$SRC/dist/vtorque-starter.cjs" ]; then
  run bash -c "cd '$SRC' && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build"
fi

# The bundles carry every runtime dependency; nothing else from node_modules is needed.
for f in bin/vtorque-prologue bin/package.json dist/vtorque-prologue.cjs dist/vtorque-heavy.cjs dist/vendor-execa.cjs dist/vendor-yaml.cjs dist/vtorque-starter.cjs; do
  mode=0644; [ "$f" = bin/vtorque-prologue ] && mode=0755
  put "$mode" "$P/$f" < "$SRC/$f"
done

if [ -f "$CONF/prologue.ini" ]; then
  if ! cmp -s "$SRC/conf/prologue.ini" "$CONF/prologue.ini"; then
    put 0644 "$CONF/prologue.ini.new" < "$SRC/conf/prologue.ini"
    echo "kept your $CONF/prologue.ini; the shipped one is $CONF/prologue.ini.new"
  fi
else
  put 0644 "$CONF/prologue.ini" < "$SRC/conf/prologue.ini"
fi

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
  [ "$SUBMIT_FILTER" = /usr/local/sbin/torque_submitfilter ] || echo "submit filter: add 'SUBMITFILTER $SUBMIT_FILTER' to $TORQUE_HOME/torque.cfg on the hosts users run qsub on"
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
