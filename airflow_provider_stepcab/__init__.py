"""Apache Airflow provider that runs Stimela-style YAML recipes as DAGs.

Importing this package is cheap and has no side effects: the recipe model
(:mod:`airflow_provider_stepcab.recipe`) and the planners
(:mod:`airflow_provider_stepcab.plan`) never import Airflow.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict:
    """Describe this provider to Airflow's ``ProvidersManager`` (entry point target)."""
    from airflow_provider_stepcab.provider_info import provider_info

    return provider_info()
