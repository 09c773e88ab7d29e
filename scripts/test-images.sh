#!/usr/bin/env bash
# Makes the local Docker images that the Docker executor's tests run in. No
# image registry is reachable on shoal's machines, so nothing can be pulled:
# each image is a `docker import` of a root filesystem built here from
# Debian's packages (see docs/design/test-images.md).
#
#   shoal-test/busybox:1  Debian's busybox-static with every applet linked
#                         (sh, nc, httpd, wget, sleep, kill, ps, ...); ~2 MB
#   shoal-test/python:1   a minbase debootstrap of Debian bookworm with
#                         python3 and python3-pytest, docs/locales stripped
#
# Every image carries the label org.shoal.test-image=1 and the recipe it was
# made from (org.shoal.test-image.recipe). Root filesystem tarballs are cached
# under ${SHOAL_IMAGE_CACHE:-$HOME/.cache/shoal-images}, so an image that was
# removed comes back in seconds; the slow debootstrap runs only when the
# cache is missing or its recipe changed.
#
# Usage: scripts/test-images.sh [--rebuild]
#   --rebuild   ignore existing images and cached tarballs
#
# Prints one line per image on stdout: name, how it was obtained (reused: the
# image was there; imported: from the cached tarball; built: from packages),
# seconds. Progress goes to stderr. Idempotent: when everything is in place
# it costs one `docker info` and one `docker image inspect`.
#
# Exit status: 0 images ready; 2 no Docker engine reachable (callers decide:
# CI fails, local runs skip the Docker tests); 1 anything else.
set -euo pipefail
umask 022

# Bump a recipe's revision when the way its image is made changes: images and
# cached tarballs with another recipe are rebuilt.
BUSYBOX_IMAGE=shoal-test/busybox:1
BUSYBOX_RECIPE="r1:busybox-static"
BUSYBOX_APPLETS="sh nc httpd sleep wget kill ps" # what the tests rely on
PYTHON_IMAGE=shoal-test/python:1
PYTHON_SUITE=bookworm
PYTHON_PACKAGES=python3,python3-pytest
PYTHON_RECIPE="r1:$PYTHON_SUITE:minbase:$PYTHON_PACKAGES"

LABEL=org.shoal.test-image
CACHE_DIR=${SHOAL_IMAGE_CACHE:-$HOME/.cache/shoal-images}
ENV_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'test-images: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

rebuild=false
for arg in "$@"; do
    case $arg in
    --rebuild) rebuild=true ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

# ---- the engine ---------------------------------------------------------------

if ! command -v docker >/dev/null 2>&1; then
    log "no docker client on PATH: cannot make the Docker test images"
    exit 2
fi
if ! info_err=$(docker info 2>&1 >/dev/null); then
    log "the Docker engine is not reachable (docker info: $(printf '%s' "$info_err" | head -n 1))"
    log "start it (dockerd) or point DOCKER_HOST at one; the Docker tests cannot run without it"
    exit 2
fi

# ---- helpers ------------------------------------------------------------------

# Runs a command as root (directly, or through sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The recipe label of image $1, or nothing if the image is missing.
image_recipe() {
    docker image inspect --format "{{ index .Config.Labels \"$LABEL.recipe\" }}" "$1" 2>/dev/null || true
}

# Succeeds if the cached tarball $1 was made by recipe $2.
cache_fresh() {
    [ -s "$1" ] && [ -f "$1.recipe" ] && [ "$(cat "$1.recipe")" = "$2" ]
}

# Imports tarball $1 as image $2 with recipe $3 and default command $4 (a JSON
# array); removes the image that the name pointed to before, if any.
import_tar() {
    local tar=$1 image=$2 recipe=$3 cmd=$4 old new
    old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
    new=$(docker import \
        --change "CMD $cmd" \
        --change "ENV PATH=$ENV_PATH" \
        --change "ENV LANG=C.UTF-8" \
        --change "LABEL $LABEL=1" \
        --change "LABEL $LABEL.recipe=\"$recipe\"" \
        "$tar" "$image") || die "docker import of $tar as $image failed"
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        docker rmi "$old" >/dev/null 2>&1 || log "note: could not remove the previous $image ($old); it is in use"
    fi
}

# Atomically stores a finished tarball ($1, written next to $2) as cache
# entry $2 for recipe $3.
store_cache() {
    rm -f "$2.recipe"
    mv -f "$1" "$2"
    printf '%s\n' "$3" >"$2.recipe"
}

# Unmounts whatever is mounted below directory $1 (deepest first), so that
# removing a half-finished chroot can never reach the host's /proc or /dev.
unmount_below() {
    local dir mounts m
    dir=$(cd "$1" 2>/dev/null && pwd -P) || return 0
    mounts=$(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts 2>/dev/null | sort -r) || true
    for m in $mounts; do
        as_root umount -l "$m" 2>/dev/null || log "warning: could not unmount $m"
    done
}

# The Debian archive to bootstrap from: $SHOAL_DEBIAN_MIRROR, else the one
# apt on this machine uses (for $PYTHON_SUITE if listed, else any Debian one).
debian_mirror() {
    if [ -n "${SHOAL_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$SHOAL_DEBIAN_MIRROR"
        return
    fi
    local targets uri
    # shellcheck disable=SC2016 # $(...) are apt's format fields
    targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null | sort -u) || true
    uri=$(awk -v s="$PYTHON_SUITE" '$2 == s && $3 == "deb" { print $1; exit }' <<<"$targets")
    if [ -z "$uri" ]; then
        uri=$(awk '$3 == "deb" && $1 ~ /\/debian\/?$/ { print $1; exit }' <<<"$targets")
    fi
    [ -n "$uri" ] || die "cannot tell which Debian archive apt uses; set SHOAL_DEBIAN_MIRROR"
    printf '%s\n' "$uri"
}

# apt-get, retried once after `apt-get update` (a fresh machine may have no
# package lists, or stale ones naming files the archive no longer has).
apt_retry() {
    "$@" && return 0
    log "retrying after apt-get update..."
    as_root apt-get update -qq >&2 || die "apt-get update failed"
    "$@"
}

# ---- shoal-test/busybox ---------------------------------------------------------

# Writes the busybox root filesystem tarball to $1.
build_busybox() {
    local out=$1 dl=$work/busybox-deb pkg=$work/busybox-pkg root=$work/busybox-root bb applet
    mkdir -p "$dl" "$pkg"
    chmod 0777 "$dl" # apt's unprivileged _apt user downloads into it
    log "downloading busybox-static (apt-get download)..."
    (cd "$dl" && apt_retry apt-get download -q busybox-static >&2) || die "apt-get download busybox-static failed"
    dpkg -x "$dl"/busybox-static_*.deb "$pkg"
    bb=$pkg/bin/busybox
    [ -x "$bb" ] || bb=$pkg/usr/bin/busybox
    [ -x "$bb" ] || die "busybox-static has no bin/busybox"

    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,proc,sys,dev}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0700 "$root/root"
    cp "$bb" "$root/bin/busybox"
    # --list-full names each applet with its usual directory (bin/sh, usr/bin/wget).
    while read -r applet; do
        [ -n "$applet" ] || continue
        mkdir -p "$root/$(dirname "$applet")"
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done < <("$bb" --list-full)
    # The list is read whole first: `grep -q` leaves a pipe early, and under
    # pipefail busybox's SIGPIPE would fail the check for an applet it has.
    local applets
    applets=$("$bb" --list)
    for applet in $BUSYBOX_APPLETS; do
        grep -qx "$applet" <<<"$applets" || die "this busybox-static has no $applet applet"
    done
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out" .
}

# ---- shoal-test/python ----------------------------------------------------------

# Writes the python root filesystem tarball to $1.
build_python() {
    local out=$1 root=$work/python-root mirror started
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap (apt-get)..."
        export DEBIAN_FRONTEND=noninteractive
        apt_retry as_root apt-get install -y -qq --no-install-recommends \
            debootstrap debian-archive-keyring gpgv >"$work/apt.log" 2>&1 || {
            tail -n 20 "$work/apt.log" >&2
            die "apt-get install debootstrap failed (log above)"
        }
    fi
    mirror=$(debian_mirror)
    log "debootstrap --variant=minbase --include=$PYTHON_PACKAGES $PYTHON_SUITE from $mirror (a minute or more)..."
    started=$(now)
    if ! as_root debootstrap --variant=minbase --include="$PYTHON_PACKAGES" \
        "$PYTHON_SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 20 "$work/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    log "debootstrap done in $(since "$started")s"
    unmount_below "$root"

    # Nothing in the tests reads documentation, translations or apt's
    # indexes and downloaded packages: about half of the tree.
    as_root find "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
        "$root/usr/share/locale" "$root/usr/share/lintian" "$root/var/lib/apt/lists" \
        "$root/var/cache/apt" "$root/var/log" \
        -mindepth 1 -not -type d -delete 2>/dev/null || true
    as_root find "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
        "$root/usr/share/locale" "$root/usr/share/lintian" \
        -mindepth 1 -type d -empty -delete 2>/dev/null || true
    as_root rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old

    as_root chroot "$root" python3 -m pytest --version >/dev/null 2>&1 ||
        die "the bootstrapped tree cannot run python3 -m pytest"
    # /dev, /proc and /sys are the engine's to provide.
    as_root tar --numeric-owner -C "$root" \
        --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$out" .
    [ "$(id -u)" -eq 0 ] || as_root chown "$(id -u):$(id -g)" "$out"
}

# ---- main -----------------------------------------------------------------------

# Makes image $1 (recipe $2, default command $3) from cache tarball $4, built
# by function $5 when missing; $6 is a shell command the new image must run.
# Prints the summary line.
ensure_image() {
    local image=$1 recipe=$2 cmd=$3 tar=$4 build=$5 smoke=$6 started how
    started=$(now)
    if ! $rebuild && [ "$(image_recipe "$image")" = "$recipe" ]; then
        how=reused
    else
        if ! $rebuild && cache_fresh "$tar" "$recipe"; then
            how=imported
        else
            how=built
            "$build" "$tar.tmp"
            store_cache "$tar.tmp" "$tar" "$recipe"
        fi
        import_tar "$tar" "$image" "$recipe" "$cmd"
        docker run --rm --network none "$image" sh -c "$smoke" >/dev/null 2>&1 ||
            die "$image does not pass its check: $smoke"
    fi
    printf '%-22s %-8s %6ss\n' "$image" "$how" "$(since "$started")"
}

mkdir -p "$CACHE_DIR"
# One maker at a time: test binaries started side by side may all call us.
exec 9>"$CACHE_DIR/.lock"
if ! flock -n 9; then
    log "waiting for another test-images.sh to finish..."
    flock -w 1800 9 || die "gave up waiting for $CACHE_DIR/.lock"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-images.XXXXXX")
chmod 0755 "$work" # apt's unprivileged _apt user downloads below it
cleanup() {
    unmount_below "$work"
    as_root rm -rf --one-file-system "$work" 2>/dev/null || rm -rf --one-file-system "$work" 2>/dev/null || true
    rm -f "$CACHE_DIR"/*.tar.tmp
}
trap cleanup EXIT

ensure_image "$BUSYBOX_IMAGE" "$BUSYBOX_RECIPE" '["/bin/sh"]' \
    "$CACHE_DIR/busybox-static.tar" build_busybox \
    "for a in $BUSYBOX_APPLETS; do command -v \$a || exit 1; done; [ -k /tmp ]"
ensure_image "$PYTHON_IMAGE" "$PYTHON_RECIPE" '["/usr/bin/python3"]' \
    "$CACHE_DIR/python-$PYTHON_SUITE.tar" build_python \
    'python3 -m pytest --version'
