# syntax=docker/dockerfile:1
# Airflow 3.3 with airflow-provider-stepcab, installed with the project's constraints file.
# Build context: the repository root (docker/compose.yaml does this):
#   docker build -f docker/airflow.Dockerfile -t stepcab/airflow:dev .
FROM python:3.11-slim-bookworm

ARG AIRFLOW_UID=50000
ENV AIRFLOW_HOME=/opt/airflow \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# procps: ps for debugging; openssh-client: ssh/sftp by hand to the cluster (Airflow itself uses paramiko)
RUN apt-get update \
 && apt-get install -y --no-install-recommends procps openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow airflow \
 && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/recipes /work \
 && chown -R "${AIRFLOW_UID}:0" /opt/airflow /work

WORKDIR /opt/stepcab/src
COPY constraints/constraints-3.11.txt /opt/stepcab/constraints.txt
COPY pyproject.toml README.md ./
COPY airflow_provider_stepcab ./airflow_provider_stepcab
# The provider (pulls Airflow, the ssh/sftp/cncf-kubernetes providers) plus the PostgreSQL driver
# provider; every version comes from the constraints file. cult-cargo: only its cab files
# (its own dependency, stimela, pins pydantic<2), as the Makefile does.
RUN pip install -c /opt/stepcab/constraints.txt . "apache-airflow-providers-postgres>=7.1" \
 && pip install --no-deps cult-cargo==0.2.1 \
 && rm -rf /opt/stepcab/src

# The loader, for images run without a mounted DAGs folder (compose mounts ../dags over it).
COPY dags/stepcab_dags.py /opt/airflow/dags/stepcab_dags.py
COPY docker/airflow-entrypoint.sh /usr/local/bin/stepcab-airflow-entrypoint

USER ${AIRFLOW_UID}
WORKDIR /opt/airflow
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/stepcab-airflow-entrypoint"]
CMD ["version"]
