# vrft-mlflow: the MLflow tracking server of k8s/base/mlflow, at the MLflow and boto3 versions the
# pipeline pins, plus the PostgreSQL driver for its backend store (the upstream MLflow image has
# neither boto3 nor a PostgreSQL driver). Dependencies from docker/mlflow.lock (hash-checked; generated
# by docker/lock.sh). Needs no other build context than docker/.
#
# Build arguments: BASE_IMAGE (a Debian bookworm image with python3 + venv, e.g. docker/airgap-base.sh's),
# PIP_INDEX_URL (the package index or its mirror).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Prunable after a failed build without touching other projects' images (docker/vrft.Dockerfile).
LABEL vrft.project=vrft

ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ARG MLFLOW_VERSION=3.17.2
ARG BOTO3_VERSION=1.44.5
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

COPY mlflow.lock /opt/mlflow.lock
RUN python3 -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir --require-hashes --no-deps --index-url "${PIP_INDEX_URL}" -r /opt/mlflow.lock \
    && pip check \
    && python -c "import mlflow, boto3, psycopg2; assert mlflow.__version__ == '${MLFLOW_VERSION}'; assert boto3.__version__ == '${BOTO3_VERSION}'" \
    && groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mlflow mlflow

WORKDIR /home/mlflow
USER 1000:1000
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
