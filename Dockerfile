# One image for the deployment's workers, its init step and its notebooks (see docker-compose.yml).
# Build: docker compose build   (or: docker build -t sensorium-pipeline .)
# Layers go from the rarely changing to the often changing, so that a code change rebuilds only the
# last two: the system, then torch (about 5 GB with its CUDA libraries), then the other pinned
# dependencies, then the project itself.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# a fixed uid / gid so that bind-mounted folders (recordings, checkpoints) can be given to it on the host.
# Every folder the compose file mounts a named volume on exists here, owned by that user: Docker fills a
# new named volume from the image's folder, owner included (a folder missing here is created root-owned,
# and the user could not write its volume)
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "${GID}" sensorium \
    && useradd --uid "${UID}" --gid sensorium --create-home --shell /usr/sbin/nologin sensorium \
    && mkdir -p /var/lib/sensorium/store /var/lib/sensorium/checkpoints /var/lib/sensorium/cache /app \
    && chown -R sensorium:sensorium /var/lib/sensorium

WORKDIR /app

# PyPI's Linux wheel of torch carries CUDA: the same image trains on CPU nodes and on GPU nodes
RUN pip install --no-cache-dir torch==2.13.0

# the other pinned dependencies, read from pyproject.toml alone, with the extras of the deployment:
# Jupyter (notebook service) and s3fs (an S3 / MinIO object store)
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extra = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extra['notebook'] + extra['s3']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# the project, installed (not editable); its dependencies are all in the layer above
COPY README.md ./
COPY pipeline/ pipeline/
COPY schemas/ schemas/
COPY jobs/ jobs/
COPY usecases/ usecases/
COPY cli/ cli/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info
COPY experiments/ experiments/

USER ${UID}:${GID}
# local state of a container (the recordings cache); the object store and the checkpoints are volumes
ENV SENSORIUM_HOME=/var/lib/sensorium \
    SENSORIUM_CHECKPOINTS=/var/lib/sensorium/checkpoints \
    SENSORIUM_CREATE_TABLES=false
ENTRYPOINT ["sensorium"]
CMD ["--help"]
