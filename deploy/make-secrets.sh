#!/bin/sh
# Writes the deployment's secrets under secrets/ (git-ignored): random passwords for the database
# superuser, the worker and analyst logins and MinIO (its root user, and a read-only user for the
# analyst's notebook), and the object-store specs: store_spec.json for init and the workers,
# store_spec_analyst.json for the notebook (MinIO: the read-only user's keys). Existing files are kept,
# so running it again changes nothing. To rotate the worker or analyst password, delete its file, run this
# again, then `docker compose up -d --force-recreate` (the init step updates the login, the containers
# read the new file). The superuser's password is fixed when the `pgdata` volume is created: change it
# with ALTER ROLE in the database first, then in secrets/postgres_password.
#
#   deploy/make-secrets.sh           # the store is the `store` volume
#   deploy/make-secrets.sh --minio   # (re)writes secrets/store_spec.json and store_spec_analyst.json for
#                                    # the minio profile's bucket (SENSORIUM_BUCKET from the environment,
#                                    # default sensorium)
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

for name in postgres_password worker_password analyst_password minio_root_password minio_analyst_password; do
    write "$name" "$(random)"
done
write minio_root_user sensorium
# the analyst's MinIO user: the minio-bucket service gives it MinIO's built-in `readonly` policy
write minio_analyst_user sensorium-analyst

minio_spec() { # FILE USER_SECRET PASSWORD_SECRET: an S3 spec of the minio profile's bucket with those keys
    python3 - "${SENSORIUM_BUCKET:-sensorium}" "$2" "$3" >"secrets/$1.new" <<'PY'
import json, pathlib, sys
s = pathlib.Path("secrets")
print(json.dumps({"protocol": "s3", "endpoint": "minio:9000", "secure": False, "bucket": sys.argv[1], "location": "store",
                  "access_key": (s / sys.argv[2]).read_text().strip(),
                  "secret_key": (s / sys.argv[3]).read_text().strip()}))
PY
    mv "secrets/$1.new" "secrets/$1"
    chmod 644 "secrets/$1"
    echo "wrote secrets/$1 (MinIO, the keys of secrets/$2)"
}

if [ "${1:-}" = "--minio" ]; then
    minio_spec store_spec.json minio_root_user minio_root_password
    minio_spec store_spec_analyst.json minio_analyst_user minio_analyst_password
    echo "set SENSORIUM_STORE_FILE=/run/secrets/store_spec in .env"
else
    write store_spec.json '{"protocol": "file", "location": "/var/lib/sensorium/store"}'
    # the notebook mounts this one at /run/secrets/store_spec: for another S3 store, put read-only keys here
    write store_spec_analyst.json '{"protocol": "file", "location": "/var/lib/sensorium/store"}'
fi
