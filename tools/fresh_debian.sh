#!/bin/sh
# Tries the README's demo command on a fresh Debian 12 that has only Node.js and npm, as root, without a
# VM: a minbase debootstrap of bookworm in DIR, `apt-get install nodejs npm` inside it, a clone of REPO,
# then `npx -y deno@<pinned> task demo` run in the chroot, so lab/setup.ts installs everything else
# (apt-get, kubectl from npm) into the chroot. /proc, /sys, /dev and a tmpfs /run and /tmp are mounted in
# a private mount namespace that ends with the command; the chroot is bind-mounted onto itself so that
# `ip netns` finds "/" to be a mount point, as on a real machine. The host's packages are not touched
# (debootstrap must be installed); the lab uses its own namespaces (prefix fd1-).
#
# CA certificates the host added under /usr/local/share/ca-certificates (a TLS-intercepting proxy in
# front of npm) are copied in and named to Node and Deno (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE), or npm
# cannot reach its registry.
#
#   tools/fresh_debian.sh [REPO (default: this checkout)] [DIR (default: /tmp/krt-fresh-debian)] [demo args…]
set -eu
REPO=${1:-$(cd "$(dirname "$0")/.." && pwd)}
DIR=${2:-/tmp/krt-fresh-debian}
if [ $# -ge 2 ]; then shift 2; else shift $#; fi
VERSION=$(cat "$REPO/.deno-version")
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install debootstrap" >&2; exit 2; }

CA_ENV=""
inside() {
  unshare -m --propagation private sh -c '
    R=$1; shift
    mount --bind "$R" "$R" && mount -t proc proc "$R/proc" && mount --rbind /sys "$R/sys" &&
      mount --rbind /dev "$R/dev" && mount -t tmpfs tmpfs "$R/run" && mount -t tmpfs tmpfs "$R/tmp" &&
      exec chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 $CA_ENV \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
  ' sh "$DIR" "$@"
}

rm -rf "$DIR" && mkdir -p "$DIR"
echo "fresh-debian: debootstrap bookworm (minbase) into $DIR"
debootstrap --variant=minbase bookworm "$DIR" http://deb.debian.org/debian >"$DIR.debootstrap.log" 2>&1
echo "fresh-debian: apt-get install nodejs npm"
inside sh -c 'DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm' \
  >"$DIR.node.log" 2>&1
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$DIR/usr/local/share/ca-certificates/"
  inside update-ca-certificates >/dev/null
  # Node and Deno read the system store only when told to (as this host's environment tells them).
  export CA_ENV="NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt SSL_CERT_DIR=/etc/ssl/certs"
fi
git clone -q "$REPO" "$DIR/root/kube-router-ts"
echo "fresh-debian: npx -y deno@$VERSION task demo $*"
inside sh -c "cd /root/kube-router-ts && KRL_LAB_PREFIX=fd1- npx -y deno@$VERSION task demo $*"
