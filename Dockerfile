# framepipe: one image for every component; docker-compose.yml picks the command.
#   docker build -t framepipe .        docker run --rm framepipe --help
FROM python:3.11-slim

# no compiler needed: pyzmq, numpy, scipy, h5py and hdf5plugin ship manylinux wheels
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/framepipe
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[opencv,web]"   # web: `framepipe web` (API, control panel, /metrics)

# the example deployments; docker-compose.yml also mounts ./configs here, read-only
COPY configs /etc/framepipe
# HDF5 files (a volume in docker-compose.yml) and CURVE keys (optional, mounted)
RUN mkdir -p /data /keys && useradd --system --uid 10001 --home /data framepipe && chown framepipe /data
USER framepipe
WORKDIR /data

ENTRYPOINT ["framepipe"]
CMD ["--help"]
