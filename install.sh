#!/usr/bin/env bash
# Installs vtorque-prologue on a compute node and wires it into pbs_mom's mom_priv.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./install.sh [options]

Builds vtorque-prologue, installs it under PREFIX, installs the config without
overwriting an existing one, and writes mom_priv/prologue, prologue.parallel,
epilogue and epilogue.parallel wrappers (root-owned, mode 0500, as Torque
requires). A script already there is kept as <name>.orig and run first, with
the same arguments; its non-zero exit code wins.

Options:
  --prefix DIR        where the program goes        (default /opt/vtorque-prologue)
  --torque-home DIR   TORQUE_HOME                   (default /var/spool/torque)
  --config DIR        where prologue.ini goes       (default /etc/vtorque)
  --root DIR          install into a staging root instead of /
  --dry-run           print every action, change nothing
  --uninstall         remove the wrappers (restoring any .orig) and the program; keeps config and cache
  -h, --help          this text

Example:
  sudo ./install.sh --torque-home /var/spool/torque
Exit codes: 0 done, 1 bad usage, 2 a step failed.
USAGE
}

PREFIX=/opt/vtorque-prologue
TORQUE_HOME=/var/spool/torque
CONFIG_DIR=/etc/vtorque
ROOT=
DRY=0
UNINSTALL=0
while [ $# -gt 0 ]; do
  case "$1" in
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
NODE=$(command -v node || true)
[ -n "$NODE" ] || { echo "install.sh: node not found; install Node.js 20 or newer" >&2; exit 2; }
NODE=$(readlink -f "$NODE")

run() {
  if [ "$DRY" = 1 ]; then echo "would: $*"; else "$@"; fi
}

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

if [ "$UNINSTALL" = 1 ]; then
  for h in "${HOOKS[@]}"; do
    if [ -f "$MOM/$h" ] && grep -q 'vtorque-prologue wrapper' "$MOM/$h"; then
      run rm -f "$MOM/$h"
      if [ -f "$MOM/$h.orig" ]; then run mv "$MOM/$h.orig" "$MOM/$h"; fi
    fi
  done
  run rm -rf "$P"
  echo "uninstalled; kept $CONF and the cache"
  exit 0
fi

if [ ! -f "$SRC/dist/vtorque-prologue.cjs" ] || [ ! -f "$SRC/dist/vtorque-heavy.cjs" ] || [ ! -f "$SRC/dist/vendor-execa.cjs" ]; then
  run bash -c "cd '$SRC' && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build"
fi

# The bundles carry every runtime dependency; nothing else from node_modules is needed.
for f in bin/vtorque-prologue bin/package.json dist/vtorque-prologue.cjs dist/vtorque-heavy.cjs dist/vendor-execa.cjs dist/vendor-yaml.cjs; do
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
${chain}
exec $NODE $PREFIX/bin/vtorque-prologue --config $CONFIG_DIR/prologue.ini $sub "\$@"
WRAPPER
done
echo "installed in $P; wrappers in $MOM"
