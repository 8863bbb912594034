# syntax=docker/dockerfile:1
# Slurm nodes for docker/compose.yaml, built from the project's own cluster script and templates
# (scripts/cluster/): one source of truth for the test cluster and these images.
#   target slurm-login    munge, MariaDB + slurmdbd, slurmctld, sshd (the host Airflow submits to)
#   target slurm-compute  munge + slurmd -Z: dynamic nodes, so `--scale slurm-compute=N` just works
FROM debian:bookworm-slim AS slurm-base
ENV DEBIAN_FRONTEND=noninteractive \
    STEPCAB_CLUSTER_DIR=/var/lib/stepcab-cluster
# python3: recipes with python cabs can run on the nodes too
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates coreutils procps python3 \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/cluster/ /opt/stepcab/cluster/
COPY docker/slurm-entrypoint.sh /usr/local/bin/stepcab-slurm-entrypoint
ENTRYPOINT ["/usr/local/bin/stepcab-slurm-entrypoint"]
HEALTHCHECK --interval=10s --timeout=10s --start-period=120s --retries=3 \
    CMD ["/opt/stepcab/cluster/cluster.sh", "health"]

FROM slurm-base AS slurm-login
ENV STEPCAB_CLUSTER_ROLE=login
RUN /opt/stepcab/cluster/cluster.sh install && rm -rf /var/lib/apt/lists/*
EXPOSE 22 6817

FROM slurm-base AS slurm-compute
ENV STEPCAB_CLUSTER_ROLE=compute
RUN /opt/stepcab/cluster/cluster.sh install && rm -rf /var/lib/apt/lists/*
EXPOSE 6818
