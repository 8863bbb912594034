"""Provider metadata returned through the ``apache_airflow_provider`` entry point.

Only modules that exist are listed, so Airflow's provider manager never
points at something it cannot import.
"""

from __future__ import annotations

import importlib.util

from airflow_provider_stepcab import __version__

_PKG = "airflow_provider_stepcab"

# Modules per section; only those that exist are announced.
_CANDIDATES = {
    "operators": ["operators.native", "operators.podman", "operators.singularity",
                  "operators.slurm", "operators.kube", "operators.build"],
    "sensors": ["sensors.slurm", "sensors.status_file"],
    "triggers": ["triggers.slurm", "triggers.status_file"],
    "hooks": ["hooks.slurm"],
}


def _existing(modules: list[str]) -> list[str]:
    found = []
    for mod in modules:
        name = f"{_PKG}.{mod}"
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except ModuleNotFoundError:
            continue
    return found


def provider_info() -> dict:
    """Return the provider info dictionary Airflow expects."""
    info: dict = {
        "package-name": "airflow-provider-stepcab",
        "name": "Stepcab (Stimela recipes)",
        "description": "Run Stimela 2 YAML recipes (cabs and steps) as Airflow DAGs: natively, "
                       "in Singularity/Apptainer or Podman, as Kubernetes pods, or as Slurm jobs over SSH.",
        "versions": [__version__],
        "integrations": [{"integration-name": "Stepcab", "tags": ["software"]}],
        "config": {
            "stepcab": {
                "description": "Settings of the stepcab provider.",
                "options": {
                    "recipe_folders": {
                        "description": "Extra folders (colon-separated) searched for recipe files "
                                       "besides the DAGs folder.",
                        "version_added": "0.1.0", "type": "string", "example": "/data/recipes",
                        "default": "",
                    },
                    "workdir": {
                        "description": "Base working directory for scheduled runs; relative paths in "
                                       "recipe params resolve against <workdir>/<dag_id>/<run_id>.",
                        "version_added": "0.1.0", "type": "string", "example": "/scratch/stepcab",
                        "default": "",
                    },
                },
            },
        },
    }
    for section, modules in _CANDIDATES.items():
        existing = _existing(modules)
        if not existing:
            continue
        info[section] = [{"integration-name": "Stepcab", "python-modules": existing}]
    return info
