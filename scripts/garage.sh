#!/usr/bin/env bash
# Starts a single-node Garage (a real S3-compatible store) on 127.0.0.1 for
# the tests: layout, an imported key, a bucket, and a CORS rule that lets
# browser pages PUT parts and read their ETag.
#
#   scripts/garage.sh DIR   starts it; writes DIR/env (S3_* variables) and
#                           DIR/garage.pid; stop with: kill "$(cat DIR/garage.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(realpath "$1")
mkdir -p "$dir"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }

s3_port=$(free_port)
rpc_port=$(free_port)
admin_port=$(free_port)
config="$dir/garage.toml"
cat >"$config" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML

garage -c "$config" server >"$dir/garage.log" 2>&1 &
echo $! >"$dir/garage.pid"
for _ in $(seq 150); do
  garage -c "$config" status >/dev/null 2>&1 && break
  sleep 0.2
done
g() { garage -c "$config" "$@" >/dev/null; }
node_id=$(garage -c "$config" node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$node_id"
g layout apply --version 1

key_id="GK$(hex 12)"
secret=$(hex 32)
g key import --yes -n rindle-test "$key_id" "$secret"
g bucket create rindle-test
g bucket allow --read --write --owner rindle-test --key rindle-test

cat >"$dir/env" <<ENV
S3_ENDPOINT=http://127.0.0.1:$s3_port
S3_REGION=garage
S3_BUCKET=rindle-test
S3_ACCESS_KEY_ID=$key_id
S3_SECRET_ACCESS_KEY=$secret
S3_PATH_STYLE=true
ENV
set -a
. "$dir/env"
set +a
# The API answers a moment after the layout is applied.
cors_applied=false
for _ in $(seq 50); do
  node scripts/s3-cors.mjs && { cors_applied=true; break; }
  sleep 0.2
done
if [ "$cors_applied" != true ]; then
  echo "garage.sh: the bucket's CORS rule could not be applied" >&2
  exit 1
fi
