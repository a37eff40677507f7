#!/bin/sh
# Writes the deployment's secrets under secrets/ (git-ignored): random passwords for the database
# superuser, the worker and analyst logins and MinIO, and the object-store spec. Existing files are kept,
# so running it again changes nothing. To rotate the worker or analyst password, delete its file, run this
# again, then `docker compose up -d --force-recreate` (the init step updates the login, the containers
# read the new file). The superuser's password is fixed when the `pgdata` volume is created: change it
# with ALTER ROLE in the database first, then in secrets/postgres_password.
#
#   deploy/make-secrets.sh           # the store is the `store` volume
#   deploy/make-secrets.sh --minio   # (re)writes secrets/store_spec.json for the minio profile's bucket
#                                    # (SENSORIUM_BUCKET from the environment, default sensorium)
set -eu
cd "$(dirname "$0")/.."
umask 077
mkdir -p secrets
chmod 700 secrets # only this host's owner can list or read them ...

random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

write() { # NAME CONTENT
    if [ ! -e "secrets/$1" ]; then
        printf '%s\n' "$2" >"secrets/$1"
        echo "wrote secrets/$1"
    fi
    # ... while the containers, whose users are not this host's, can read the files mounted into them
    chmod 644 "secrets/$1"
}

for name in postgres_password worker_password analyst_password minio_root_password; do
    write "$name" "$(random)"
done
write minio_root_user sensorium
if [ "${1:-}" = "--minio" ]; then
    python3 - "${SENSORIUM_BUCKET:-sensorium}" >secrets/store_spec.json.new <<'PY'
import json, pathlib, sys
s = pathlib.Path("secrets")
print(json.dumps({"protocol": "s3", "endpoint": "minio:9000", "secure": False, "bucket": sys.argv[1], "location": "store",
                  "access_key": (s / "minio_root_user").read_text().strip(),
                  "secret_key": (s / "minio_root_password").read_text().strip()}))
PY
    mv secrets/store_spec.json.new secrets/store_spec.json
    chmod 644 secrets/store_spec.json
    echo "wrote secrets/store_spec.json (MinIO); set SENSORIUM_STORE_FILE=/run/secrets/store_spec in .env"
else
    write store_spec.json '{"protocol": "file", "location": "/var/lib/sensorium/store"}'
fi
