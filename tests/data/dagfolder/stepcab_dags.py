"""Airflow DAG loader for Stimela recipes (airflow-provider-stepcab).

Copy this file into your Airflow DAGs folder (or the root of a DAG bundle). Every Stimela recipe
file (``*.yml``/``*.yaml``) in that folder and its subfolders, and in the folders listed in the
Airflow config ``[stepcab] recipe_folders`` or env ``STEPCAB_RECIPE_FOLDERS`` (colon-separated),
becomes one Airflow DAG per recipe (only the ``DEFAULT:`` recipe when a file sets one).

A broken recipe file never hides the others: it appears under its own path in the UI's import
errors and in ``airflow dags list-import-errors``; the good recipes keep their DAGs.
"""

from airflow_provider_stepcab.dag_factory import build_dags

build_dags(globals())
