"""The optional first task of a recipe's DAG: build or pull the container images its steps need.

Added by the DAG factory when the recipe file sets ``opts.airflow.build_images: true`` (task id
``stepcab_build_images``, upstream of every step task). It does what ``stepcab build`` does
(:mod:`airflow_provider_stepcab.runtime.image_builds`, the same code) for the DAG run at hand:

* the recipe's inputs come from the run's DAG params / ``conf``; each step's backend is chosen from
  its merged backend settings, the DAG's parse-time preference (``opts.airflow.backend``) and the
  run's ``conf.steps.<step>.backend`` overrides, as the step tasks choose it; steps deselected by
  the run's ``select``/``skip_steps``/tags need nothing;
* ``singularity``: a missing ``<image_dir>/<name>.simg`` is built with
  ``<exe> build <simg> docker://<image>``; ``podman``/``docker``: a missing image is pulled;
  images already present are skipped (``rebuild=True`` builds/pulls them again); native steps need
  nothing;
* progress (``[i/n] <backend> <image>: present | building ... | done in Ns``) and the build output go
  to the task log; the task fails, naming every image and step concerned, when a runtime is missing
  or a build/pull fails, so no step starts without its image.

The task returns ``{"<backend> <image>": "present" | "built" | "pulled"}`` (its XCom).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

#: the task id the DAG factory gives the build task
BUILD_TASK_ID = "stepcab_build_images"


class StepcabBuildImagesOperator(BaseOperator):
    """Build (Singularity) or pull (Podman/Docker) the images a recipe's steps need.

    :param recipe_file: absolute path of the recipe's main file.
    :param recipe_name: the recipe inside that file.
    :param backend: parse-time backend preference handed to the step tasks too (a name or
        ``select`` list, ``opts.airflow.backend``); a run's ``conf.steps.<step>.backend`` wins over it.
    :param rebuild: rebuild/pull images that are already present (like ``stepcab build -r``).
    """

    ui_color = "#f3e8d8"

    def __init__(self, *, recipe_file: str, recipe_name: str, backend: Any = None, rebuild: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipe_file = str(recipe_file)
        self.recipe_name = recipe_name
        self.backend = backend
        self.rebuild = bool(rebuild)

    def execute(self, context: Any) -> dict:
        """Collect the images of the run's steps and build/pull the missing ones.

        :raises AirflowException: the recipe or the run's conf is invalid, a runtime is missing, or
            an image could not be built/pulled.
        """
        from airflow_provider_stepcab.runtime.image_builds import build_images, collect_images, failed
        from airflow_provider_stepcab.operators.resolve import plain_params
        from airflow_provider_stepcab.operators.overrides import parse_overrides
        from airflow_provider_stepcab.operators.resolve import _selection
        from airflow_provider_stepcab.recipe.api import load_recipe_result
        from airflow_provider_stepcab.recipe.backends import select_list
        from airflow_provider_stepcab.recipe.errors import RecipeError

        result = load_recipe_result(self.recipe_file, self.recipe_name)
        if result.recipe is None or result.problems.errors:
            raise AirflowException(f"recipe {self.recipe_name} of {self.recipe_file}: "
                                   + "; ".join(str(p) for p in result.problems.errors))
        recipe = result.recipe
        dag_run = context.get("dag_run")
        conf = dict(getattr(dag_run, "conf", None) or {})
        try:
            overrides = parse_overrides(conf, recipe, plain_params(context.get("params")),
                                        config_tree=getattr(result.config, "tree", None))
        except RecipeError as exc:
            raise AirflowException(f"recipe {self.recipe_name}: {exc}") from None
        pref = {"select": select_list(self.backend)} if self.backend else {}

        def backend_for(path: tuple) -> dict:  # as StepcabBaseOperator layers it (resolve._choose_backend)
            return {**pref, **overrides.backend_for(path)}

        def wanted(rs: Any) -> bool:
            return _selection(recipe, tuple(rs.path), overrides) is None

        def say(text: str) -> None:
            self.log.info("%s", text)

        def show(level: int, text: str) -> None:
            self.log.log(level, "    %s", text)

        images, errors = collect_images(result, overrides.recipe_params, backend_for, say=say, wanted=wanted)
        if errors:
            raise AirflowException(f"cannot plan the images of recipe {self.recipe_name}: " + "; ".join(errors))
        if not images:
            self.log.info("recipe %s needs no container images on the backends its steps select", self.recipe_name)
            return {}
        status = build_images(images, rebuild=self.rebuild, say=say, log=show)
        bad = failed(status)
        if bad:
            raise AirflowException(f"{len(bad)} of {len(status)} image(s) could not be built/pulled: "
                                   + "; ".join(f"{name}: {why[len('FAILED: '):]}" for name, why in bad.items()))
        return status
