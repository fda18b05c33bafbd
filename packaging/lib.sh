# shellcheck shell=bash
# Shared helpers of the packaging scripts: step timing, binfmt_misc registration for qemu-user,
# and debootstrapped Debian roots cached as tarballs outside the clone.
#
# Environment:
#   SCANARR_CI_CACHE  where root tarballs are kept between runs (default /var/cache/scanarr-ci);
#                     an empty value disables the cache.
#   DEBIAN_SUITE      the Debian release of the roots (default bookworm).

: "${SCANARR_CI_CACHE=/var/cache/scanarr-ci}"
: "${DEBIAN_SUITE:=bookworm}"

pk_step() { printf '\n==> %s\n' "$*"; }
pk_fail() { printf 'packaging FAILED: %s\n' "$*" >&2; exit 1; }

# pk_timed NAME COMMAND...: run COMMAND, then print and record how long it took. The record
# (one "seconds<TAB>name" line per step) goes to $PK_TIMES when set.
pk_timed() {
  local name=$1 start=$SECONDS status=0
  shift
  "$@" || status=$?
  local took=$((SECONDS - start))
  printf '==> time: %4d s  %s%s\n' "$took" "$name" "$( ((status == 0)) || echo " (FAILED, exit $status)")"
  # Recorded as a part of the step of .ci/run that runs it.
  if [[ -n ${PK_TIMES:-} ]]; then printf '%d\t  part: %s\n' "$took" "$name" >>"$PK_TIMES"; fi
  return "$status"
}

# Debian architecture name -> qemu-user name.
pk_qemu_arch() {
  case $1 in
    arm64) echo aarch64 ;;
    armhf) echo arm ;;
    *) pk_fail "no qemu-user mapping for Debian architecture $1" ;;
  esac
}

# Install a Debian package's command when it is missing (CI starts on a machine with none).
pk_need() { # pk_need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ -z ${PK_APT_UPDATED:-} ]]; then
    apt-get update -q >/dev/null || pk_fail "apt-get update"
    PK_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >/dev/null ||
    pk_fail "apt-get install $2"
}

# Register qemu-user-static with binfmt_misc for a foreign Debian architecture, so that the
# kernel runs its ELF binaries (in a chroot too: the F flag opens the interpreter at
# registration time).
pk_binfmt() { # pk_binfmt DEBIAN_ARCH
  local qarch conf name
  qarch=$(pk_qemu_arch "$1")
  pk_need "qemu-$qarch-static" qemu-user-static
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || pk_fail "mount binfmt_misc"
  fi
  conf=/usr/lib/binfmt.d/qemu-$qarch.conf
  [[ -f $conf ]] || pk_fail "$conf missing (qemu-user-static)"
  name=$(cut -d: -f2 "$conf")
  if [[ ! -e /proc/sys/fs/binfmt_misc/$name ]]; then
    cat "$conf" >/proc/sys/fs/binfmt_misc/register || pk_fail "register $conf"
  fi
  grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$name" || pk_fail "binfmt $name not enabled"
}

# The mirror apt on this machine uses, when it names one (else debootstrap's default).
pk_mirror() {
  local uri=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    uri=$(awk '/^deb / && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"
}

# pk_root_key DEBIAN_ARCH PACKAGES: the name of such a root in the cache.
pk_root_key() { printf '%s-%s-minbase-%s' "$DEBIAN_SUITE" "$1" "${2//,/+}"; }

# pk_root DEBIAN_ARCH DEST PACKAGES: a minbase Debian root with PACKAGES (comma-separated) in
# DEST, from the cache tarball when there is one; otherwise debootstrapped (in two stages under
# qemu-user for a foreign architecture) and then saved to the cache.
pk_root() {
  local arch=$1 dest=$2 include=$3 key tarball host_arch mirror
  host_arch=$(dpkg --print-architecture)
  key=$(pk_root_key "$arch" "$include")
  tarball=${SCANARR_CI_CACHE:+$SCANARR_CI_CACHE/$key.tar}
  rm -rf --one-file-system "$dest" && mkdir -p "$dest"
  [[ $arch == "$host_arch" ]] || pk_binfmt "$arch"
  if [[ -n $tarball && -s $tarball ]]; then
    echo "root $key: from the cache $tarball"
    tar -C "$dest" -xf "$tarball" || pk_fail "unpack $tarball"
    return 0
  fi
  pk_need debootstrap debootstrap
  # The mirror as an optional last argument: none means debootstrap's default.
  local mirror_arg=()
  mirror=$(pk_mirror)
  [[ -n $mirror ]] && mirror_arg=("$mirror")
  echo "root $key: debootstrap${mirror:+ from $mirror} (no cache)"
  if [[ $arch == "$host_arch" ]]; then
    debootstrap --variant=minbase --include="$include" "$DEBIAN_SUITE" "$dest" "${mirror_arg[@]}" \
      >"$dest.debootstrap.log" 2>&1 || { tail -n 30 "$dest.debootstrap.log" >&2; pk_fail "debootstrap $key"; }
  else
    local qarch
    qarch=$(pk_qemu_arch "$arch")
    debootstrap --arch="$arch" --foreign --variant=minbase --include="$include" "$DEBIAN_SUITE" \
      "$dest" "${mirror_arg[@]}" >"$dest.debootstrap.log" 2>&1 ||
      { tail -n 30 "$dest.debootstrap.log" >&2; pk_fail "debootstrap (first stage) $key"; }
    cp "/usr/bin/qemu-$qarch-static" "$dest/usr/bin/"
    chroot "$dest" /debootstrap/debootstrap --second-stage >>"$dest.debootstrap.log" 2>&1 ||
      { tail -n 30 "$dest.debootstrap.log" >&2; pk_fail "debootstrap (second stage, emulated) $key"; }
  fi
  rm -f "$dest.debootstrap.log"
  # Downloaded .debs are not needed to use the root.
  rm -rf "$dest"/var/cache/apt/archives/*.deb
  if [[ -n $tarball ]]; then
    mkdir -p "$SCANARR_CI_CACHE"
    tar -C "$dest" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball" ||
      echo "root $key: could not save the cache $tarball (going on without it)" >&2
  fi
}
