#!/usr/bin/env bash
# Builds the project's image from the real Dockerfile and runs it, without docker and without any
# registry: podman (runc, cgroupfs) with a private configuration and storage in .devstack/podman,
# and local base images made from Debian's packages by debootstrap, built once and kept there.
# The Dockerfile's FROM images (node:22-slim, python:3.12-slim) are replaced at build time only,
# through its NODE_IMAGE and PYTHON_IMAGE build arguments, by Debian bookworm with nodejs/npm and
# with python3 (3.11). Then scripts/image_smoke.py runs gateways and a function host from the image
# against a private stack's Redis, Kafka and PostgreSQL and checks them through their clients.
set -euo pipefail
cd "$(dirname "$0")/.."

began=$SECONDS
say() { printf 'test-image: [%4ss] %s\n' "$((SECONDS - began))" "$*"; }
die() {
    printf 'test-image: error: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] ||
    die "podman runs rootful here (runc, cgroupfs) and debootstrap needs root: run 'sudo make test-image'"
[ -x .venv/bin/python ] || die "no .venv: run 'make bootstrap' first"

suite=${TEST_IMAGE_SUITE:-bookworm}
mirror=${TEST_IMAGE_MIRROR:-http://deb.debian.org/debian}
image=${TEST_IMAGE_NAME:-localhost/chat:image-test}

# ----- tools -----
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and this is no Debian/Ubuntu: install them, then run this again"
    say "installing ${missing[*]} with apt-get"
    timeout 600 apt-get update -qq ||
        die "apt-get update failed: check the network and the apt sources, then run this again"
    timeout 900 env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed (see above): fix it, then run this again"
fi

# ----- private podman configuration and storage: nothing global is read or changed -----
home=$PWD/.devstack/podman
mkdir -p "$home"
cat >"$home/containers.conf" <<EOF
# crun and podman's default ulimits and systemd cgroups are refused by some sandboxes: runc,
# cgroupfs and the process's own limits work everywhere.
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "$home/run/libpod"
EOF
cat >"$home/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$home/storage"
runroot = "$home/run"
EOF
# No registry at all: an image that is not local is an error, never a pull.
cat >"$home/registries.conf" <<'EOF'
unqualified-search-registries = []
short-name-mode = "enforcing"
EOF
export CONTAINERS_CONF=$home/containers.conf
export CONTAINERS_STORAGE_CONF=$home/storage.conf
export CONTAINERS_REGISTRIES_CONF=$home/registries.conf

# ----- local base images, made once and kept (rebuilt when their recipe changes) -----
# Labelled with the hash of this script's recipe lines, so a changed recipe rebuilds them.
recipe_key() { printf '%s\n' "$suite" "$mirror" "$@" | sha256sum | cut -c1-16; }
has_image() { # name key
    [ "$(podman image inspect --format '{{index .Labels "chat.recipe"}}' "$1" 2>/dev/null)" = "$2" ]
}

debian=localhost/chat-base/debian:$suite
debian_key=$(recipe_key debootstrap-minbase-v1)
if ! has_image "$debian" "$debian_key"; then
    say "making the Debian $suite base with debootstrap (about a minute)"
    rootfs=$(mktemp -d "$home/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    timeout 900 debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$home/debootstrap.log" 2>&1 || {
        tail -n 20 "$home/debootstrap.log" >&2
        die "debootstrap failed (log: $home/debootstrap.log): check access to $mirror, then run this again"
    }
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
    # What a slim image leaves out: package caches and lists, documentation, translations.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/{doc,man,info,locale}
    tar -C "$rootfs" -c . | podman import --quiet --change "LABEL chat.recipe=$debian_key" - "$debian" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
else
    say "Debian $suite base present ($debian)"
fi

# Certificate authorities this machine trusts beyond Debian's (a TLS-inspecting proxy's): the
# bases trust them too, or npm and pip in the build could not reach their registries.
extra_cas=/usr/local/share/ca-certificates
cas_key=$(find "$extra_cas" -name '*.crt' -type f -exec sha256sum {} + 2>/dev/null | sort | sha256sum | cut -c1-16)

role_image() { # name packages...: the Debian base with these packages, as a FROM image
    local name=$1 key context
    shift
    key=$(recipe_key "$debian_key" "$cas_key" "$@" role-v2)
    if has_image "$name" "$key"; then
        say "base $name present"
        return
    fi
    say "making base $name: Debian $suite with $*"
    context=$(mktemp -d)
    mkdir "$context/ca"
    find "$extra_cas" -name '*.crt' -type f -exec cp {} "$context/ca/" \; 2>/dev/null || true
    cat >"$context/Containerfile" <<EOF
FROM $debian
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends $* >/dev/null \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
EOF
    if ! podman build --quiet --network host --pull=never --label "chat.recipe=$key" \
        -t "$name" -f "$context/Containerfile" "$context" >/dev/null; then
        rm -rf "$context"
        die "could not make $name (see above): check access to $mirror, then run this again"
    fi
    rm -rf "$context"
}
# The roles of node:22-slim (npm) and python:3.12-slim (python, venv, pip) in the Dockerfile.
role_image localhost/chat-base/node:"$suite" nodejs npm ca-certificates
role_image localhost/chat-base/python:"$suite" python3 python3-venv python-is-python3 ca-certificates

# ----- the project's image, from the committed Dockerfile -----
say "building $image from Dockerfile (local bases for node:22-slim and python:3.12-slim)"
build_began=$SECONDS
podman build --network host --pull=never \
    --build-arg NODE_IMAGE=localhost/chat-base/node:"$suite" \
    --build-arg PYTHON_IMAGE=localhost/chat-base/python:"$suite" \
    -t "$image" -f Dockerfile . >"$home/build.log" 2>&1 || {
    tail -n 40 "$home/build.log" >&2
    die "the image did not build (log: $home/build.log): fix the Dockerfile or what it copies"
}
say "built $image in $((SECONDS - build_began))s"

# ----- run it: the smoke check starts and removes everything it runs, whatever happens -----
label=chat.image-test=$$
cleanup() {
    local ids
    ids=$(podman ps -aq --filter "label=$label" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || podman rm -f -t 0 $ids >/dev/null 2>&1 || true
}
trap cleanup EXIT
.venv/bin/python -m scripts.image_smoke --image "$image" --label "$label"
say "done"
