#!/bin/bash
# install-deps.sh [EXTRA-PACKAGE...]: make sure every Debian package listed in
# xtask/packages.txt (plus any given as arguments) is installed.
# Used by `cargo xtask cell up|demo|bench` and by .ci/run (the list lives in
# ONE file).  Needs root only when something is missing.
#  * All installed (dpkg-query): does nothing, no apt at all.
#  * Otherwise: writes /usr/sbin/policy-rc.d exiting 101 first (so package
#    postinsts never start openafs-*, krb5-kdc, krb5-admin-server services on
#    a systemd machine), then one `apt-get update` and one
#    `apt-get install -y --no-install-recommends` of the missing packages.
#    --no-install-recommends keeps openafs-modules-dkms + dkms + kernel
#    headers out (no kernel module is wanted).
set -euo pipefail
HERE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
LIST=${AFSD_PACKAGES_FILE:-$HERE/../packages.txt}
[ -r "$LIST" ] || { echo "install-deps.sh: cannot read $LIST" >&2; exit 2; }

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$LIST")
pkgs+=("$@")

installed() {  # installed PKG: true if dpkg says "install ok installed"
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
command -v dpkg-query >/dev/null || { echo "install-deps.sh: dpkg-query not found (Debian/Ubuntu only)" >&2; exit 2; }
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages installed"
  exit 0
fi
echo "install-deps: missing: ${missing[*]}"
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: must run as root to install packages" >&2; exit 1; }

# never let package scripts start services (policy-rc.d exit 101 = "denied")
rc=/usr/sbin/policy-rc.d
if [ ! -e "$rc" ] || ! grep -qx 'exit 101' "$rc"; then
  [ -e "$rc" ] && cp -a "$rc" "$rc.afsd-bak" && echo "install-deps: saved old $rc as $rc.afsd-bak"
  printf '#!/bin/sh\n# written by afsd-rs xtask/testcell/install-deps.sh: no service starts from package scripts\nexit 101\n' > "$rc"
  chmod 755 "$rc"
  echo "install-deps: wrote $rc (exit 101)"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
still=()
for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
if [ ${#still[@]} -ne 0 ]; then
  echo "install-deps.sh: still not installed after apt-get: ${still[*]}" >&2
  exit 1
fi
echo "install-deps: installed ${missing[*]}"
