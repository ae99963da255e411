#!/usr/bin/env bash
# What must exist before the compose stack's first start (deploy/README.md, "Docker Compose").
#
#   ./bootstrap.sh            # files, then register
#   ./bootstrap.sh files      # .env, state directories, passwords, certificates, Mosquitto users
#   ./bootstrap.sh register   # agent key -> gateway registry, first dashboard admin
#
# Idempotent: an existing file is never overwritten, an agent or user that exists is left alone.
# `files` needs openssl, and mosquitto_passwd or Docker (the eclipse-mosquitto image has it).
# `register` needs Docker with the compose plugin; it starts postgres and runs one-shot
# containers of the gateway and agent images.
#
# Environment (all optional):
#   BROKER_NAMES   extra subject alternative names of the broker certificate, comma-separated,
#                  e.g. "DNS:broker.plant.example,IP:10.1.2.3" (what remote agents dial)
#   SHOPFLOOR_UID, SHOPFLOOR_GID
#                  the user the services run as; default: yours (10001 when run as root, and
#                  the files are then given to that user)
#   OUT            where .env, secrets/, certs/ and state/ go (default: beside this script)
#   GATEWAY, AGENT how to run the binaries for `register` (default: `docker compose run` of the
#                  images; with local binaries, also set GATEWAY_CONFIG and AGENT_CONFIG)
set -euo pipefail
umask 077

here="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$here}"
AGENT_ID="${AGENT_ID:-w1-agent}"          # [agent] id in agent.toml
AGENT_SCOPE="${AGENT_SCOPE:-p1/e1/w1}"    # [agent] workshop in agent.toml
ADMIN_USER="${ADMIN_USER:-admin}"
GATEWAY_MQTT_USER="shopfloor-gateway"     # mqtt.username in gateway.toml, `user` in the ACL
MOSQUITTO_IMAGE="${MOSQUITTO_IMAGE:-eclipse-mosquitto:2.0}"

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A random password: 32 bytes, base64url without padding (no ':' or '\', so pgpass needs no
# escaping). Written without a newline.
new_password() {
  local f="$1"
  [ -e "$f" ] && return 0
  openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n' >"$f"
  say "wrote $f"
}

files() {
  command -v openssl >/dev/null || die "openssl is needed (apt-get install openssl)"
  mkdir -p "$OUT"
  local uid gid
  if [ -f "$OUT/.env" ]; then
    # shellcheck disable=SC1091
    . "$OUT/.env"
    uid="$SHOPFLOOR_UID" gid="$SHOPFLOOR_GID"
  else
    if [ "$(id -u)" = 0 ]; then
      uid="${SHOPFLOOR_UID:-10001}" gid="${SHOPFLOOR_GID:-10001}"
    else
      uid="${SHOPFLOOR_UID:-$(id -u)}" gid="${SHOPFLOOR_GID:-$(id -g)}"
    fi
    printf '# Written by bootstrap.sh: the user every service of compose.yaml runs as.\nSHOPFLOOR_UID=%s\nSHOPFLOOR_GID=%s\n' \
      "$uid" "$gid" >"$OUT/.env"
    chmod 0644 "$OUT/.env"
    say "wrote $OUT/.env (services run as $uid:$gid)"
  fi

  mkdir -p "$OUT/secrets" "$OUT/certs"
  for d in postgres mosquitto gateway agent plant prometheus grafana; do
    mkdir -p "$OUT/state/$d"
  done
  chmod 0700 "$OUT/secrets" "$OUT/state" "$OUT"/state/*
  chmod 0755 "$OUT/certs"

  # Passwords.
  local s="$OUT/secrets"
  new_password "$s/postgres-password"          # the database superuser (maintenance, backups)
  new_password "$s/shopfloor-db-password"      # the gateway's role `shopfloor`
  new_password "$s/gateway-mqtt-password"
  new_password "$s/agent-mqtt-password"
  new_password "$s/grafana-admin-password"
  if [ ! -e "$s/gateway-pgpass" ]; then
    printf 'postgres:5432:shopfloor:shopfloor:%s\n' "$(cat "$s/shopfloor-db-password")" >"$s/gateway-pgpass"
    say "wrote $s/gateway-pgpass"
  fi

  # Certificates: a CA for this stack only (its key stays in secrets/), and the broker's.
  local c="$OUT/certs"
  if [ ! -e "$c/ca.pem" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$s/ca.key" -out "$c/ca.pem" -days 3650 -subj "/CN=Shopfloor compose CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      2>/dev/null
    say "wrote $c/ca.pem (key: $s/ca.key)"
  fi
  if [ ! -e "$c/mosquitto.crt" ]; then
    local san="DNS:mosquitto,DNS:localhost,IP:127.0.0.1${BROKER_NAMES:+,$BROKER_NAMES}"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$s/mosquitto.key" -subj "/CN=mosquitto" -out "$s/mosquitto.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$san" >"$s/mosquitto.ext"
    openssl x509 -req -in "$s/mosquitto.csr" -CA "$c/ca.pem" -CAkey "$s/ca.key" -CAserial "$s/ca.srl" -CAcreateserial \
      -days 825 -extfile "$s/mosquitto.ext" -out "$c/mosquitto.crt" 2>/dev/null
    rm -f "$s/mosquitto.csr" "$s/mosquitto.ext"
    say "wrote $c/mosquitto.crt ($san)"
  fi
  chmod 0644 "$c"/*.pem "$c"/*.crt

  # Mosquitto users: the gateway and the agent (user name = agent id, as the ACL expects).
  if [ ! -e "$s/mosquitto-passwd" ]; then
    local tmp="$s/mosquitto-passwd.new"
    rm -f "$tmp" && : >"$tmp"
    local user pwfile
    for user in "$GATEWAY_MQTT_USER" "$AGENT_ID"; do
      if [ "$user" = "$GATEWAY_MQTT_USER" ]; then pwfile="$s/gateway-mqtt-password"; else pwfile="$s/agent-mqtt-password"; fi
      if command -v mosquitto_passwd >/dev/null; then
        mosquitto_passwd -b "$tmp" "$user" "$(cat "$pwfile")" 2>/dev/null
      elif command -v docker >/dev/null; then
        docker run --rm --user "$(id -u):$(id -g)" -v "$s:/s" --entrypoint mosquitto_passwd \
          "$MOSQUITTO_IMAGE" -b /s/mosquitto-passwd.new "$user" "$(cat "$pwfile")" 2>/dev/null
      else
        die "mosquitto_passwd or docker is needed for $s/mosquitto-passwd"
      fi
    done
    grep -q "^$AGENT_ID:" "$tmp" || die "mosquitto_passwd wrote no user $AGENT_ID"
    mv "$tmp" "$s/mosquitto-passwd"
    say "wrote $s/mosquitto-passwd ($GATEWAY_MQTT_USER, $AGENT_ID)"
  fi
  chmod 0600 "$s"/*

  if [ "$(id -u)" = 0 ]; then
    chown -R "$uid:$gid" "$OUT/secrets" "$OUT/state"
  fi
}

register() {
  local gateway agent gcfg acfg
  if [ -n "${GATEWAY:-}" ]; then
    gateway="$GATEWAY" agent="${AGENT:?set AGENT too}"
  else
    command -v docker >/dev/null || die "docker is needed"
    docker compose version >/dev/null 2>&1 || die "the docker compose plugin is needed"
    cd "$here"
    say "starting postgres"
    docker compose up -d --wait postgres
    gateway="docker compose run --rm --no-deps -T gateway"
    agent="docker compose run --rm --no-deps -T agent"
  fi
  gcfg="${GATEWAY_CONFIG:-/etc/shopfloor/gateway.toml}"
  acfg="${AGENT_CONFIG:-/etc/shopfloor/agent.toml}"

  # The agent's key is created in its data directory on first use; only the public half leaves.
  local key
  key="$($agent key show --config "$acfg")"
  case "$key" in ed25519:*) ;; *) die "unexpected output of key show: $key" ;; esac
  say "agent $AGENT_ID: $key"
  if $gateway agents list --config "$gcfg" | grep -qw -- "$AGENT_ID"; then
    say "agent $AGENT_ID is registered already (rotate keys with agents rotate)"
  else
    $gateway agents add --config "$gcfg" --id "$AGENT_ID" --pubkey "$key" --scope "$AGENT_SCOPE"
  fi

  if $gateway user list --config "$gcfg" | grep -qw -- "$ADMIN_USER"; then
    say "user $ADMIN_USER exists already"
  else
    say "dashboard user $ADMIN_USER (role admin); its password is printed once:"
    $gateway user add --config "$gcfg" --name "$ADMIN_USER" --role admin
  fi
  say "Grafana: user admin, password in $OUT/secrets/grafana-admin-password"
}

case "${1:-all}" in
  files) files ;;
  register) register ;;
  all) files && register ;;
  *) die "usage: $0 [all|files|register]" ;;
esac
