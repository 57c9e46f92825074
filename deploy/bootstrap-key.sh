#!/bin/sh
# The first admin key of a compose deployment, without a manual step: makes the file $1 hold
# a new random API key (`evk_` and 32 letters and digits, 190 bits) unless it holds one
# already, readable by the user $2 alone (default: eventide, the image's user). The compose
# files run it once, as root, before the servers, which create that key at start
# (EVENTIDE_BOOTSTRAP_KEY_FILE; only its hash is stored). Read it with
#   docker compose -f deploy/compose.yaml exec eventide cat /keys/admin-key
set -eu
file=${1:?usage: bootstrap-key.sh FILE [OWNER]}
owner=${2:-eventide}
if [ -s "$file" ]; then
    echo "bootstrap-key: $file holds a key already"
    exit 0
fi
umask 077
key=evk_$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
printf '%s\n' "$key" >"$file.new"
chown "$owner" "$file.new"
chmod 0400 "$file.new"
mv "$file.new" "$file"
echo "bootstrap-key: wrote a new admin key to $file"
