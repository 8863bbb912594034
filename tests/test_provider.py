"""The package registers itself as an Airflow provider."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_stepcab import get_provider_info

BIN = Path(sys.executable).parent


def test_provider_info_lists_only_importable_modules():
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-stepcab"
    for section in ("operators", "sensors", "triggers", "hooks"):
        for block in info.get(section, []):
            for mod in block["python-modules"]:
                __import__(mod)  # every announced module really imports


@pytest.mark.airflow
def test_airflow_providers_list_shows_stepcab(tmp_path):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), PATH=f"{BIN}:{os.environ['PATH']}")
    out = subprocess.run([str(BIN / "airflow"), "providers", "list", "-o", "json"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"airflow-provider-stepcab"' in out.stdout
    get = subprocess.run([str(BIN / "airflow"), "providers", "get", "airflow-provider-stepcab",
                          "-o", "json"], env=env, capture_output=True, text=True, timeout=300)
    assert get.returncode == 0, get.stderr
    assert "0.1.0" in get.stdout
