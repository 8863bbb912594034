"""Image resolution (Stimela 2.1.4's ``resolve_image_name`` and cached ``.simg`` names)."""

import pytest

from airflow_provider_stepcab.plan.images import (
    ImageError, ResolvedImage, cab_image_spec, image_name, image_spec_from, resolve_cab_image, resolve_image,
    simg_filename,
)
from airflow_provider_stepcab.recipe.backends import BackendOptions
from airflow_provider_stepcab.recipe.model import Cab, Flavour, ImageSpec

IMAGES = {"default-python": {"registry": "quay.io/stimela2", "name": "python-astro", "version": "cc0.2.0"},
          "default-casa": {"registry": "quay.io/stimela2", "name": "casa", "version": "cc0.2.0"}}


def test_string_specs():
    assert image_spec_from("quay.io/stimela2/breizorro:cc0.2.1") == ImageSpec("quay.io/stimela2", "breizorro",
                                                                              "cc0.2.1")
    assert image_spec_from("busybox") == ImageSpec(None, "busybox", "latest")
    assert image_spec_from(None) is None


@pytest.mark.parametrize("registry,overrides,expected", [
    (None, {}, "quay.io/stimela2/x:1"),
    ("", {}, "quay.io/stimela2/x:1"),
    ("DEFAULT", {}, "quay.io/stimela2/x:1"),
    ("LOCAL", {}, "x:1"),
    ("LOCAL", {"": "localhost"}, "localhost/x:1"),
    ("docker.io/me", {}, "docker.io/me/x:1"),
    ("docker.io/me", {"docker.io/me": "mirror/me"}, "mirror/me/x:1"),
    (None, {"quay.io/stimela2": "registry.local:5000/stimela2"}, "registry.local:5000/stimela2/x:1"),
])
def test_registry_rules(registry, overrides, expected):
    assert image_name(ImageSpec(registry, "x", "1"), override_registries=overrides) == expected


def test_version_defaults_to_latest_and_custom_default_registry():
    assert image_name(ImageSpec(None, "x", None), default_registry="my.reg/org") == "my.reg/org/x:latest"


def test_path_wins():
    img = resolve_image(ImageSpec("r", "x", "1", path="/images/x.sif"))
    assert img == ResolvedImage(name="x.sif", path="/images/x.sif") and img.prebuilt
    assert img.simg_path("/cache") == "/images/x.sif"


def test_simg_names_like_stimela():
    assert simg_filename("quay.io/stimela2/breizorro:cc0.2.1") == "quay.io-stimela2-breizorro:cc0.2.1.simg"
    img = resolve_image(ImageSpec("quay.io/stimela2", "breizorro", "cc0.2.1"))
    assert img.simg_path("/home/u/.singularity") == "/home/u/.singularity/quay.io-stimela2-breizorro:cc0.2.1.simg"
    assert img.docker_uri == "docker://quay.io/stimela2/breizorro:cc0.2.1"


def test_flavour_defaults():
    py = Cab(name="p", command="m.f", flavour=Flavour("python"), image=ImageSpec(version="mine"))
    assert cab_image_spec(py, IMAGES) == ImageSpec("quay.io/stimela2", "python-astro", "mine")
    casa = Cab(name="c", command="flagdata", flavour=Flavour("casa-task"))
    assert cab_image_spec(casa, IMAGES).name == "casa"
    binary = Cab(name="b", command="ls", image=ImageSpec(None, "tool", "2"))
    assert resolve_cab_image(binary, BackendOptions(), IMAGES).name == "quay.io/stimela2/tool:2"
    assert resolve_cab_image(binary, {"default_registry": "r/o"}, IMAGES).name == "r/o/tool:2"


def test_no_image_is_an_error():
    with pytest.raises(ImageError, match="does not define an image"):
        resolve_image(None, cab_name="x")
