# syntax=docker/dockerfile:1
# vrft-mlflow: the MLflow tracking server of k8s/base/mlflow, at the MLflow and boto3 versions the
# pipeline pins, plus the PostgreSQL driver for its backend store (the upstream MLflow image has
# neither boto3 nor a PostgreSQL driver). Needs no build context.
FROM python:3.11-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
ARG BOTO3_VERSION=1.44.5
ARG PSYCOPG2_VERSION=2.9.13

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" "boto3==${BOTO3_VERSION}" \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
    && groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/mlflow mlflow

WORKDIR /home/mlflow
USER 1000:1000
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
