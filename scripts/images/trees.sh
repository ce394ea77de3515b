# shellcheck shell=bash
# Root-tree and image helpers for scripts/build-test-images.
# Sourced, not executed.  Every function writes only below the paths it is
# given.  Nothing here mounts anything: trees are plain directories that
# mkfs.ext4 -d copies into a filesystem image.

# Size of every synthetic ext4 filesystem (sparse; only used blocks count).
: "${FS_SIZE:=64M}"

# put FILE MODE <<'EOF' ... EOF   -- write stdin to FILE (creating parents)
put() {
  local f=$1 mode=${2:-0644}
  mkdir -p -- "$(dirname -- "$f")"
  cat >"$f"
  chmod "$mode" -- "$f"
}

# Deterministic UUID from a string, so the same builder gives the same UUIDs.
uuid_for() {
  local h
  h=$(printf '%s' "vtorque-test-image:$1" | sha256sum | cut -c1-32)
  printf '%s-%s-4%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

# Common merged-/usr Linux skeleton.  $1 = tree root, $2 = fs label.
linux_skeleton() {
  local t=$1 label=$2
  mkdir -p "$t"/{etc,usr/bin,usr/sbin,usr/lib,usr/lib64,usr/share,var/lib,var/log,var/tmp,tmp,root,home,dev,proc,sys,run,mnt,srv,boot}
  chmod 1777 "$t/tmp" "$t/var/tmp"
  chmod 0700 "$t/root"
  ln -s usr/bin "$t/bin"
  ln -s usr/sbin "$t/sbin"
  ln -s usr/lib "$t/lib"
  ln -s usr/lib64 "$t/lib64"
  # A real x86_64 ELF so libguestfs can determine the architecture.
  cp /usr/bin/dash "$t/usr/bin/sh"
  chmod 0755 "$t/usr/bin/sh"
  put "$t/etc/fstab" <<EOF
# /etc/fstab: static file system information.
# <file system>  <mount point>  <type>  <options>          <dump> <pass>
LABEL=$label     /              ext4    errors=remount-ro  0      1
EOF
  put "$t/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
EOF
  put "$t/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
  put "$t/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
nogroup:x:65534:
EOF
  put "$t/etc/shadow" 0640 <<'EOF'
root:*:19700:0:99999:7:::
daemon:*:19700:0:99999:7:::
nobody:*:19700:0:99999:7:::
EOF
  # VM-job layout required by the prologue.
  mkdir -p "$t/workspace" "$t/opt-vm" "$t/opt"
  # cloud-init configuration (the package's files are added per distro).
  put "$t/etc/cloud/cloud.cfg" <<'EOF'
# The top level settings are used as module
# and base configuration.
users:
  - default
disable_root: true
preserve_hostname: false

# Only look for a NoCloud seed (the prologue writes one).
datasource_list: [ NoCloud, None ]

cloud_init_modules:
  - seed_random
  - bootcmd
  - write_files
  - growpart
  - resizefs
  - set_hostname
  - update_hostname
  - users_groups
  - ssh
cloud_config_modules:
  - runcmd
cloud_final_modules:
  - scripts_per_once
  - scripts_user
  - final_message
system_info:
  default_user:
    name: vmuser
    lock_passwd: true
    shell: /bin/sh
EOF
  put "$t/etc/cloud/cloud.cfg.d/05_logging.cfg" <<'EOF'
## This yaml formatted config file handles setting
## logger information.
output: {all: '| tee -a /var/log/cloud-init-output.log'}
EOF
  put "$t/etc/cloud/cloud.cfg.d/README" <<'EOF'
# All files with the '.cfg' extension in this directory will be read by
# cloud-init. They are read in lexical order. Later files overwrite values
# in earlier files.
EOF
}

cloud_init_stub() {
  local t=$1 pydir=$2
  put "$t/usr/bin/cloud-init" 0755 <<'EOF'
#!/usr/bin/python3
# Test-image stub of the cloud-init entry point.
import re
import sys
from cloudinit.cmd.main import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\.pyw|\.exe)?$", "", sys.argv[0])
    sys.exit(main())
EOF
  put "$t/$pydir/cloudinit/__init__.py" <<'EOF'
# This file is part of cloud-init (test-image stub).
EOF
  put "$t/$pydir/cloudinit/version.py" <<'EOF'
__VERSION__ = "22.4.2"
def version_string():
    return __VERSION__
EOF
}

# Debian 12 tree with cloud-init installed.  $1 = tree root, $2 = fs label.
# grub_stub TREE DIR: GRUB's configuration where grub-mkconfig writes it
# (Debian boot/grub, RedHat boot/grub2), so the image passes rule bootable
# through a bootloader. A text placeholder: these images are never booted.
grub_stub() {
  put "$1/$2/grub.cfg" <<'EOF'
# Placeholder for rule bootable (vtorque test image; never booted).
set timeout=0
EOF
}

debian_tree() {
  local t=$1 label=$2
  linux_skeleton "$t" "$label"
  grub_stub "$t" boot/grub
  put "$t/etc/os-release" <<'EOF'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
EOF
  echo 12.7 | put "$t/etc/debian_version"
  echo vtp-debian | put "$t/etc/hostname"
  # Some of Debian's own groups, with Debian's gids (base-passwd): rule guest-group.
  printf '%s\n' adm:x:4: disk:x:6: sudo:x:27: shadow:x:42: staff:x:50: users:x:100: >>"$t/etc/group"
  # Debian ships HOME commented out (default /home applies).
  put "$t/etc/default/useradd" <<'EOF'
# Default values for useradd(8)
SHELL=/bin/sh
# The default group for users
# GROUP=100
# The default home directory. Same as DHOME for adduser
# HOME=/home
# The number of days after a password expires until the account
# is permanently disabled
# INACTIVE=-1
# Create a mailbox spool file
# CREATE_MAIL_SPOOL=no
EOF
  mkdir -p "$t/var/lib/dpkg/info" "$t/var/lib/dpkg/updates"
  put "$t/var/lib/dpkg/status" <<'EOF'
Package: base-files
Essential: yes
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 340
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 12.4+deb12u7
Description: Debian base system miscellaneous files

Package: dash
Essential: yes
Status: install ok installed
Priority: required
Section: shells
Installed-Size: 214
Maintainer: Andrej Shadura <andrewsh@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 0.5.12-2
Description: POSIX-compliant shell

EOF
  cat >>"$t/var/lib/dpkg/status" <<'EOF'
Package: cloud-init
Status: install ok installed
Priority: optional
Section: admin
Installed-Size: 3046
Maintainer: Debian Cloud Team <debian-cloud@lists.debian.org>
Architecture: all
Version: 22.4.2-1+deb12u1
Depends: python3-configobj, python3-jinja2, python3-jsonpatch, python3-jsonschema, python3-oauthlib, python3-requests, python3-yaml, python3:any
Conffiles:
 /etc/cloud/cloud.cfg 0123456789abcdef0123456789abcdef
Description: initialization and customization tool for cloud instances
Homepage: https://github.com/canonical/cloud-init

EOF
  put "$t/var/lib/dpkg/info/cloud-init.list" <<'EOF'
/.
/etc
/etc/cloud
/etc/cloud/cloud.cfg
/etc/cloud/cloud.cfg.d
/etc/cloud/cloud.cfg.d/05_logging.cfg
/etc/cloud/cloud.cfg.d/README
/usr
/usr/bin
/usr/bin/cloud-init
/usr/lib/python3/dist-packages/cloudinit
/usr/lib/python3/dist-packages/cloudinit/__init__.py
/usr/lib/python3/dist-packages/cloudinit/version.py
EOF
  cloud_init_stub "$t" usr/lib/python3/dist-packages
}

# Remove every trace of the cloud-init package (as after "apt-get purge").
debian_purge_cloud_init() {
  local t=$1
  rm -rf "$t/usr/bin/cloud-init" "$t/usr/lib/python3/dist-packages/cloudinit" \
         "$t/etc/cloud" "$t/var/lib/dpkg/info/cloud-init.list"
  # Drop the cloud-init stanza (stanzas are blank-line separated).
  awk 'BEGIN{RS=""; ORS="\n\n"} !/^Package: cloud-init\n/' \
    "$t/var/lib/dpkg/status" >"$t/var/lib/dpkg/status.new"
  mv "$t/var/lib/dpkg/status.new" "$t/var/lib/dpkg/status"
  chmod 0644 "$t/var/lib/dpkg/status"
}

# hyv_kernel TREE KVER [MODULE...] -- /lib/modules/KVER with a modules.dep as
# depmod writes it: the stock modules, plus each named HyV guest module
# (DKMS puts out-of-tree modules under updates/dkms/).  The .ko files are
# small text placeholders; nothing loads them.
hyv_kernel() {
  local t=$1 kver=$2 m d; shift 2
  d="$t/usr/lib/modules/$kver"
  mkdir -p "$d/kernel/drivers/infiniband/core" "$d/kernel/drivers/virtio"
  for m in ib_core ib_uverbs; do
    printf 'placeholder for %s.ko (%s)\n' "$m" "$kver" | put "$d/kernel/drivers/infiniband/core/$m.ko"
  done
  printf 'placeholder for virtio_pci.ko (%s)\n' "$kver" | put "$d/kernel/drivers/virtio/virtio_pci.ko"
  {
    echo 'kernel/drivers/virtio/virtio_pci.ko:'
    echo 'kernel/drivers/infiniband/core/ib_core.ko:'
    echo 'kernel/drivers/infiniband/core/ib_uverbs.ko: kernel/drivers/infiniband/core/ib_core.ko'
  } >"$d/modules.dep"
  for m in "$@"; do
    printf 'placeholder for HyV guest module %s.ko (%s)\n' "$m" "$kver" | put "$d/updates/dkms/$m.ko"
    if [[ $m == virtio_hyv ]]; then
      echo "updates/dkms/$m.ko: kernel/drivers/infiniband/core/ib_core.ko" >>"$d/modules.dep"
    else
      echo "updates/dkms/$m.ko: updates/dkms/virtio_hyv.ko kernel/drivers/infiniband/core/ib_core.ko" >>"$d/modules.dep"
    fi
  done
  chmod 0644 "$d/modules.dep"
}

# libibverbs_stub TREE -- libibverbs1's library as Debian installs it (a placeholder).
libibverbs_stub() {
  local l="$1/usr/lib/x86_64-linux-gnu"
  printf 'placeholder for libibverbs.so.1.14.44.0\n' | put "$l/libibverbs.so.1.14.44.0"
  ln -s libibverbs.so.1.14.44.0 "$l/libibverbs.so.1"
}

# Rocky Linux 9 tree with cloud-init present (no rpm database).
rocky_tree() {
  local t=$1 label=$2
  linux_skeleton "$t" "$label"
  grub_stub "$t" boot/grub2
  put "$t/etc/os-release" <<'EOF'
NAME="Rocky Linux"
VERSION="9.4 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
ROCKY_SUPPORT_PRODUCT="Rocky-Linux-9"
ROCKY_SUPPORT_PRODUCT_VERSION="9.4"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
EOF
  echo 'Rocky Linux release 9.4 (Blue Onyx)' | put "$t/etc/rocky-release"
  ln -s rocky-release "$t/etc/redhat-release"
  ln -s rocky-release "$t/etc/system-release"
  echo vtp-rocky | put "$t/etc/hostname"
  # Some of RHEL's own groups, with RHEL's gids (setup's /etc/group), which differ from Debian's: rule guest-group.
  printf '%s\n' adm:x:4: disk:x:6: wheel:x:10: mail:x:12: users:x:100: >>"$t/etc/group"
  # RHEL-family shadow-utils ships HOME explicitly.
  put "$t/etc/default/useradd" <<'EOF'
# useradd defaults file
GROUP=100
HOME=/home
INACTIVE=-1
EXPIRE=
SHELL=/bin/bash
SKEL=/etc/skel
CREATE_MAIL_SPOOL=yes
EOF
  mkdir -p "$t/var/lib/rpm" "$t/usr/lib/python3.9/site-packages"
  cloud_init_stub "$t" usr/lib/python3.9/site-packages
}

# "OSv-like" tree: OSv's well-known files as small placeholders, no Linux
# userland (no /etc/os-release, no /bin/sh), so libguestfs finds no OS.
osv_tree() {
  local t=$1 f
  mkdir -p "$t/workspace" "$t/home" "$t/opt-vm" "$t/tools" "$t/usr/mgmt" "$t/usr/lib" "$t/etc"
  for f in libenviron.so libvdso.so tools/mount-fs.so tools/cpiod.so usr/mgmt/cloud-init.so; do
    printf 'OSv placeholder: /%s (not a real shared object)\n' "$f" | put "$t/$f"
  done
  printf '127.0.0.1 localhost\n' | put "$t/etc/hosts"
  printf 'OSv test image (placeholder files only)\n' | put "$t/README.osv"
}

# mkfs_image TREE LABEL NAME OUT.qcow2 [RAW_KEEP]  -- ext4 from TREE, to qcow2.
# The raw intermediate is deleted unless RAW_KEEP names where to move it.
mkfs_image() {
  local tree=$1 label=$2 name=$3 out=$4 keep=${5:-} raw
  raw="$out.ext4.tmp"
  rm -f -- "$raw"
  truncate -s "$FS_SIZE" -- "$raw"
  mkfs.ext4 -q -F -L "$label" -U "$(uuid_for "$name")" \
    -E root_owner=0:0 -d "$tree" -- "$raw" >&2
  qemu-img convert -q -f raw -O qcow2 -- "$raw" "$out"
  if [[ -n $keep ]]; then mv -- "$raw" "$keep"; else rm -f -- "$raw"; fi
}

# be64 FILE OFFSET  -- read a big-endian unsigned 64-bit integer
be64() { od -An -N8 -j "$2" -t u8 --endian=big -- "$1" | tr -d ' '; }
be32() { od -An -N4 -j "$2" -t u4 --endian=big -- "$1" | tr -d ' '; }

# corrupt_qcow2 FILE -- zero the first refcount block, so every allocated
# cluster has refcount 0 while still referenced: qemu-img check reports
# "ERROR cluster N refcount=0 reference=1" and exits 2 (corruption).
corrupt_qcow2() {
  local f=$1 cbits csize rt rb
  cbits=$(be32 "$f" 20)
  csize=$((1 << cbits))
  rt=$(be64 "$f" 48)   # refcount_table_offset
  rb=$(be64 "$f" "$rt") # first refcount block
  (( rb > 0 )) || { echo "corrupt_qcow2: no refcount block in $f" >&2; return 1; }
  dd if=/dev/zero of="$f" bs="$csize" seek=$((rb / csize)) count=1 conv=notrunc status=none
}
