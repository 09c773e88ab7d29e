#!/usr/bin/env bash
# Provides a local PostgreSQL for the store's tests (crates/shoal-store):
# installs the server with apt-get if it is missing, creates and starts a
# cluster (no systemd needed), makes role shoal (password shoal, CREATEDB)
# and database shoal, waits until the server accepts connections, and
# prints the one line to evaluate:
#
#     eval "$(scripts/ci-postgres.sh)"
#     # export SHOAL_TEST_POSTGRES_URL=postgres://shoal:shoal@127.0.0.1:5432/shoal
#
# Idempotent: when all that is already done it costs one psql call. Progress
# goes to stderr; stdout carries only the export line. Needs root (or sudo)
# only to install, start or set up; the tests then create and drop their own
# databases as shoal.
set -euo pipefail

ROLE=shoal
PASSWORD=shoal
DATABASE=shoal
HOST=127.0.0.1

log() { printf 'ci-postgres: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

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

# Runs a command as the postgres superuser (peer authentication on the socket).
as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif [ "$(id -u)" -eq 0 ] && command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        as_root su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
    fi
}

url_for() { printf 'postgres://%s:%s@%s:%s/%s' "$ROLE" "$PASSWORD" "$HOST" "$1" "$DATABASE"; }

# Succeeds if shoal can log in on port $1 and may create databases.
ready_as_shoal() {
    command -v psql >/dev/null 2>&1 || return 1
    local ok
    ok=$(PGPASSWORD=$PASSWORD PGCONNECT_TIMEOUT=3 psql -h "$HOST" -p "$1" -U "$ROLE" -d "$DATABASE" \
        -XAtqc "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user" \
        2>/dev/null) || return 1
    [ "$ok" = t ]
}

# The pg_lsclusters line of the newest cluster ("VER NAME PORT STATUS ...").
cluster_line() {
    pg_lsclusters --no-header 2>/dev/null | sort -V -k1,1 | tail -n 1
}

# ---- fast path: everything is in place ------------------------------------

if command -v pg_lsclusters >/dev/null 2>&1; then
    line=$(cluster_line)
    if [ -n "$line" ]; then
        port=$(awk '{print $3}' <<<"$line")
        if ready_as_shoal "$port"; then
            echo "export SHOAL_TEST_POSTGRES_URL=$(url_for "$port")"
            exit 0
        fi
    fi
fi

# ---- install ----------------------------------------------------------------

server_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

if ! server_installed; then
    log "installing PostgreSQL (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2 || die "apt-get update failed"
    as_root apt-get install -y -qq --no-install-recommends postgresql >&2 ||
        die "apt-get install postgresql failed"
    server_installed || die "postgresql installed, but no server binary under /usr/lib/postgresql"
fi

version=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' |
    awk -F/ '{print $5}' | sort -V | tail -n 1)
[ -n "$version" ] || die "cannot tell which PostgreSQL version is installed"

# ---- cluster ----------------------------------------------------------------

line=$(pg_lsclusters --no-header 2>/dev/null | awk -v v="$version" '$1 == v' | head -n 1)
if [ -z "$line" ]; then
    log "creating cluster $version/main..."
    as_root pg_createcluster "$version" main >&2 || die "pg_createcluster $version main failed"
    line=$(pg_lsclusters --no-header | awk -v v="$version" '$1 == v' | head -n 1)
fi
read -r ver name port status _ <<<"$line"

# Removes the socket lock file that a killed server left behind when the
# process it names is gone or a zombie not yet reaped (the server itself only
# recognizes a process that no longer exists).
clear_stale_socket_lock() {
    local lock="/var/run/postgresql/.s.PGSQL.$1.lock" pid state
    [ -f "$lock" ] || return 0
    pid=$(head -n 1 "$lock" 2>/dev/null || true)
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    if [ -z "$state" ] || [[ "$state" == Z* ]]; then
        log "removing stale $lock (process $pid is gone)"
        as_root rm -f "$lock" "/var/run/postgresql/.s.PGSQL.$1"
    fi
}

if [ "$status" != online ]; then
    log "starting cluster $ver/$name on port $port..."
    # A server killed moments ago may still be exiting: retry for a while.
    started=false
    for _ in 1 2 3 4 5; do
        clear_stale_socket_lock "$port"
        if as_root pg_ctlcluster "$ver" "$name" start >&2; then
            started=true
            break
        fi
        sleep 2
    done
    if ! $started; then
        as_root service postgresql start >&2 ||
            die "cannot start cluster $ver/$name (see /var/log/postgresql/)"
    fi
fi

for _ in $(seq 1 60); do
    if pg_isready -q -h "$HOST" -p "$port"; then
        break
    fi
    sleep 0.5
done
pg_isready -q -h "$HOST" -p "$port" || die "PostgreSQL on port $port does not accept connections after 30 s"

# ---- role and database ------------------------------------------------------

log "setting up role $ROLE and database $DATABASE..."
as_postgres psql -p "$port" -XAtq -v ON_ERROR_STOP=1 <<SQL >&2 || die "cannot create role $ROLE"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
        CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    ELSE
        ALTER ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD';
    END IF;
END
\$\$;
SQL
if [ "$(as_postgres psql -p "$port" -XAtqc "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")" != 1 ]; then
    as_postgres createdb -p "$port" -O "$ROLE" "$DATABASE" >&2 || die "cannot create database $DATABASE"
fi

ready_as_shoal "$port" ||
    die "role $ROLE cannot log in with a password on $HOST:$port (check pg_hba.conf)"
log "ready on port $port"
echo "export SHOAL_TEST_POSTGRES_URL=$(url_for "$port")"
