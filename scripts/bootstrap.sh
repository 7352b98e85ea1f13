#!/usr/bin/env bash
# Installs what the local stack and the tests need, and skips what is already there:
# Debian packages (Redis and redis-cli, haproxy, PostgreSQL, Maven, Java, Node.js/npm, Chromium
# for the page tests), the Python virtualenv from the lock file, actionlint, the Kafka jars, the
# web page's npm packages. `scripts/bootstrap.sh --lint-tools` installs only the virtualenv and
# actionlint.
set -euo pipefail
cd "$(dirname "$0")/.."

began=$SECONDS
say() { printf 'bootstrap: %s\n' "$*"; }
die() {
    printf 'bootstrap: error: %s\n' "$*" >&2
    exit 1
}

lint_only=false
case "${1:-}" in
    --lint-tools) lint_only=true ;;
    "") ;;
    *) die "unknown option $1 (known: --lint-tools)" ;;
esac

# ----- system packages -----
have_postgres() {
    local bin
    for bin in /usr/lib/postgresql/*/bin/postgres; do
        [ -x "$bin" ] && return 0
    done
    return 1
}
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# redis-cli creates the local Redis Cluster (REDIS=cluster).
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
have_postgres || missing+=(postgresql)
command -v mvn >/dev/null || missing+=(maven)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
[ -x .venv/bin/python ] || python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)

if $lint_only; then
    missing=()
    [ -x .venv/bin/python ] || python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and this is no Debian/Ubuntu: install them with your package manager, then run this again"
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        die "missing ${missing[*]}: as root, run 'apt-get install ${missing[*]}', then run this again"
    fi
    say "installing ${missing[*]} with apt-get"
    timeout 600 "${as_root[@]}" apt-get update -qq ||
        die "apt-get update failed: check the network and the apt sources, then run this again"
    timeout 1800 "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed (see above): fix it, then run this again"
elif ! $lint_only; then
    say "system packages present (redis-server, redis-cli, haproxy, postgresql, maven, java, npm, chromium)"
fi

# ----- Python virtualenv -----
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv ||
        die "python3 -m venv failed: install python3-venv (apt-get install python3-venv), then run this again"
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements-dev.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
    # The lock pins every package with its hashes: CI, the image and the Lambda archives get
    # exactly these versions. `make lock` refreshes it from requirements*.txt.
    say "installing Python packages from requirements-dev.lock"
    timeout 1800 .venv/bin/python -m pip install -q --disable-pip-version-check \
        --require-hashes -r requirements-dev.lock ||
        die "pip install failed (see above): fix the lock (make lock) or the network, then run this again"
    echo "$wanted" >"$stamp"
else
    say "Python packages up to date"
fi

# ----- actionlint, built from its Go module (make lint checks the workflow with it) -----
actionlint_version=v1.7.12
if [ "$(.venv/bin/actionlint --version 2>/dev/null | head -n1)" != "$actionlint_version" ]; then
    go=$(command -v go || true)
    [ -n "$go" ] || [ ! -x /usr/local/go/bin/go ] || go=/usr/local/go/bin/go
    [ -n "$go" ] ||
        die "actionlint needs Go 1.25 or newer to build: install it (https://go.dev/doc/install), then run this again"
    say "building actionlint $actionlint_version with $("$go" version | cut -d' ' -f3) (go install, about a minute)"
    GOBIN="$PWD/.venv/bin" GOFLAGS=-mod=mod timeout 900 "$go" install \
        "github.com/rhysd/actionlint/cmd/actionlint@$actionlint_version" ||
        die "go install actionlint failed (see above): check access to the Go module proxy, then run this again"
else
    say "actionlint $actionlint_version present"
fi
if $lint_only; then
    say "done in $((SECONDS - began))s"
    exit 0
fi

# ----- Kafka broker jars -----
pom=devstack/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
[ -n "$version" ] || die "$pom has no <kafka.version>"
lib=.devstack/kafka-lib-$version
pom_sum=$(sha256sum "$pom" | cut -d' ' -f1)
if [ "$(cat "$lib/.pom.sha256" 2>/dev/null || true)" != "$pom_sum" ]; then
    say "resolving the Kafka $version jars with mvn (cached in ~/.m2)"
    mkdir -p .devstack
    # Resolve beside the target and swap it in whole, so an interrupted run never leaves half a classpath.
    staging=$(mktemp -d .devstack/kafka-lib.XXXXXX)
    if ! timeout 900 mvn -B -q -f "$pom" dependency:copy-dependencies \
        -DoutputDirectory="$PWD/$staging" -DincludeScope=runtime >.devstack/mvn.log 2>&1; then
        rm -rf "$staging"
        tail -n 30 .devstack/mvn.log >&2
        die "mvn could not resolve $pom: check access to Maven Central (and ~/.m2/settings.xml), then run this again"
    fi
    echo "$pom_sum" >"$staging/.pom.sha256"
    chmod 755 "$staging"
    # Class-data archives of the broker belong to the old jars.
    rm -rf "$lib" "$lib"-*.jsa
    mv "$staging" "$lib"
else
    say "Kafka $version jars present"
fi

# ----- web page: the Socket.IO browser client, pinned by package-lock.json -----
stamp=node_modules/.package-lock.sha256
wanted=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
    say "installing the web page's npm packages (npm ci)"
    timeout 600 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error ||
        die "npm ci failed (see above): check access to the npm registry, then run this again"
    echo "$wanted" >"$stamp"
else
    say "npm packages up to date"
fi

say "done in $((SECONDS - began))s"
