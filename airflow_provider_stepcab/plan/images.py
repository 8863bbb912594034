"""Container image resolution, as Stimela 2.1.4 does it (pure: no I/O).

A cab's ``image`` (:class:`~..recipe.model.ImageSpec`) becomes:

* a **prebuilt image file** when ``image.path`` is set — it wins over everything else and is used
  as is (Singularity only; container engines use the name);
* otherwise a **docker-style name** ``registry/name:version``:

  - ``version`` defaults to ``latest``;
  - an empty registry or ``DEFAULT`` means ``opts.backend.default_registry`` (``quay.io/stimela2``);
  - ``LOCAL`` means no registry at all (``name:version``);
  - then ``override_registries`` maps the registry to another one (a registry missing from
    the mapping is kept);

* for Singularity, the cached image file ``<image_dir>/<name with / replaced by ->.simg``, e.g.
  ``~/.singularity/quay.io-stimela2-breizorro:cc0.2.1.simg``.

Flavours supply a default image (``config.images``): ``python``/``python-code`` cabs merge their
``image`` fields over ``images.default-python``; ``binary`` cabs without an image fall back to
``default-python`` and ``casa-task`` cabs to ``images.default-casa`` (Stimela only lets container
backends run cabs that name an image, so for ``binary`` that fallback is rarely reached).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional

from ..recipe.model import ImageSpec

DEFAULT_REGISTRY = "quay.io/stimela2"


class ImageError(ValueError):
    """The cab names no usable image."""


@dataclass(frozen=True)
class ResolvedImage:
    """A cab's image after resolution.

    :param name: docker-style reference (``registry/name:version``), or the file's basename for a
        prebuilt image given by ``path``.
    :param path: the prebuilt image file (``image.path``), else ``None``.
    """

    name: str
    path: Optional[str] = None

    @property
    def prebuilt(self) -> bool:
        return self.path is not None

    @property
    def docker_uri(self) -> str:
        """``docker://<name>``: what ``singularity build`` is given."""
        return f"docker://{self.name}"

    def simg_path(self, image_dir: str) -> str:
        """The Singularity image file: ``path`` if prebuilt, else cached in ``image_dir``."""
        if self.path is not None:
            return self.path
        return posixpath.join(image_dir, simg_filename(self.name))


def simg_filename(image_name: str) -> str:
    """Cached Singularity image file name: ``/`` → ``-``, plus ``.simg``."""
    return image_name.replace("/", "-") + ".simg"


def image_spec_from(value: Any) -> Optional[ImageSpec]:
    """An :class:`ImageSpec` from a spec, a mapping (``config.images.*``) or a
    ``registry/name:version`` string; ``None`` stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, ImageSpec):
        return value
    if isinstance(value, str):
        spec, version = value.rsplit(":", 1) if ":" in value else (value, "latest")
        registry, name = spec.rsplit("/", 1) if "/" in spec else (None, spec)
        return ImageSpec(registry=registry, name=name, version=version)
    if isinstance(value, Mapping):
        known = {f.name for f in fields(ImageSpec)}
        spec = ImageSpec(**{k: (str(v) if v is not None else None) for k, v in value.items() if k in known})
        if not spec.name and spec.path:
            spec = replace(spec, name=posixpath.basename(spec.path.rstrip("/")))
        return spec
    raise ImageError(f"invalid image setting {value!r}")


def _merge(base: Optional[ImageSpec], over: Optional[ImageSpec]) -> Optional[ImageSpec]:
    """Fields of ``over`` win unless ``None`` (scabha's ``merge_dataclass_instances``)."""
    if base is None:
        return over
    if over is None:
        return replace(base)
    return ImageSpec(**{f.name: getattr(over, f.name) if getattr(over, f.name) is not None
                        else getattr(base, f.name) for f in fields(ImageSpec)})


def cab_image_spec(cab: Any, images: Optional[Mapping[str, Any]] = None) -> Optional[ImageSpec]:
    """The image a cab runs in, with its flavour's default applied.

    :param cab: a :class:`~..recipe.model.Cab`.
    :param images: the config's ``images`` section (``default-python``, ``default-casa``).
    """
    images = images or {}
    kind = getattr(getattr(cab, "flavour", None), "kind", None) or "binary"
    own = image_spec_from(getattr(cab, "image", None))
    if kind in ("python", "python-code"):
        return _merge(image_spec_from(images.get("default-python")), own)
    if own is not None:
        return own
    if kind == "casa-task":
        return image_spec_from(images.get("default-casa"))
    return image_spec_from(images.get("default-python"))


def image_name(spec: ImageSpec, *, default_registry: str = DEFAULT_REGISTRY,
               override_registries: Optional[Mapping[str, str]] = None) -> str:
    """``registry/name:version`` for ``spec`` (Stimela's ``resolve_image_name``)."""
    if not spec.name:
        raise ImageError("image name or path must be specified")
    version = spec.version or "latest"
    registry = spec.registry
    if registry == "DEFAULT" or not registry:
        registry = default_registry
    elif registry == "LOCAL":
        registry = ""
    overrides = override_registries or {}
    if registry in overrides:
        registry = overrides[registry]
    return f"{registry}/{spec.name}:{version}" if registry else f"{spec.name}:{version}"


def resolve_image(spec: Optional[ImageSpec], *, default_registry: str = DEFAULT_REGISTRY,
                  override_registries: Optional[Mapping[str, str]] = None,
                  cab_name: str = "?") -> ResolvedImage:
    """Resolve ``spec``: ``path`` wins, else the registry rules above.

    :raises ImageError: no image given.
    """
    if spec is None:
        raise ImageError(f"cab '{cab_name}' does not define an image")
    if spec.path:
        return ResolvedImage(name=posixpath.basename(spec.path.rstrip("/")), path=spec.path)
    return ResolvedImage(name=image_name(spec, default_registry=default_registry,
                                         override_registries=override_registries))


def resolve_cab_image(cab: Any, backend: Any = None, images: Optional[Mapping[str, Any]] = None
                      ) -> ResolvedImage:
    """Resolve the image of ``cab`` under backend settings ``backend``.

    :param backend: a :class:`~..recipe.backends.BackendOptions` or a mapping with
        ``default_registry``/``override_registries`` (``None``: Stimela's defaults).
    :param images: the config's ``images`` section.
    """
    if isinstance(backend, Mapping):
        default_registry = backend.get("default_registry") or DEFAULT_REGISTRY
        overrides = backend.get("override_registries") or {}
    else:
        default_registry = getattr(backend, "default_registry", None) or DEFAULT_REGISTRY
        overrides = getattr(backend, "override_registries", None) or {}
    return resolve_image(cab_image_spec(cab, images), default_registry=default_registry,
                         override_registries=overrides, cab_name=getattr(cab, "name", "?"))


def images_section(config: Any) -> Mapping[str, Any]:
    """The ``images`` section of a loaded config (``LoadedConfig`` or its tree)."""
    tree = getattr(config, "tree", config)
    if isinstance(tree, Mapping):
        return tree.get("images") or {}
    return {}


__all__ = ["ResolvedImage", "ImageError", "simg_filename", "image_spec_from", "cab_image_spec", "image_name",
           "resolve_image", "resolve_cab_image", "images_section", "DEFAULT_REGISTRY"]
