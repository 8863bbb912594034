"""recipe/selection.py against Stimela 2.1.4: the same steps run for the same -s/-k/-t/--skip-tags/-e.

Every case runs the oracle's ``stimela run`` on ``tests/data/cli/selection.yml`` (nested recipe,
for_loop, tags incl. always/never, ``skip: true`` steps), reads which steps ran, and compares with
:func:`select_steps` combined with the recipe's own ``skip`` values.
"""

from __future__ import annotations

import concurrent.futures

import pytest
from stimela_run import SELECTION_RECIPE, need_stimela, ran_paths, stimela_run

from airflow_provider_stepcab.operators.overrides import parse_overrides
from airflow_provider_stepcab.recipe.api import load_recipe
from airflow_provider_stepcab.recipe.errors import RecipeError
from airflow_provider_stepcab.recipe.selection import (
    Selection,
    SelectionError,
    select_steps,
)

CASES = {
    "default": [],
    "single": ["-s", "a"],
    "commas-and-repeats": ["-s", "a,b", "-s", "d"],
    "range-over-a-subrecipe": ["-s", "a:sub"],
    "nested-label": ["-s", "sub.x"],
    "nested-range": ["-s", "sub.x:z"],
    "unbounded-below-nested": ["-s", ":sub.x"],
    "unbounded-above": ["-s", "b:"],
    "skip-steps": ["-k", "a", "-k", "sub"],
    "skip-nested": ["-k", "sub.z"],
    "skip-range": ["-k", "b:loop"],
    "tags": ["-t", "calibrate"],
    "nested-tag": ["-t", "sub.quick"],
    "tags-and-skip-tags": ["-t", "calibrate", "--skip-tags", "slow"],
    "skip-tags-only": ["--skip-tags", "image"],
    "single-step-unskips": ["-s", "held"],
    "range-does-not-unskip": ["-s", "held:sub"],
    "comma-with-range-does-not-unskip": ["-s", "a,held:sub"],
    "enable-step": ["-e", "held"],
    "enable-nested": ["-e", "sub.y"],
    "never-tag-selected-by-name": ["-s", "c"],
    "never-tag-selected-by-tag": ["-t", "never"],
    "loop-step": ["-s", "loop.p"],
    "loop-tag": ["-t", "loop.calibrate"],
    "step-and-tag": ["-s", "d", "-t", "calibrate", "-k", "b"],
    "nothing-selected": ["-s", "a", "-k", "a", "-k", "prep"],
    "unknown-step": ["-s", "nope"],
    "unknown-tag": ["-t", "nope"],
    "unknown-nested-step": ["-k", "sub.nope"],
}

OPTION = {"-s": "steps", "-k": "skip_steps", "-t": "tags", "--skip-tags": "skip_tags", "-e": "enable_steps"}


def selection_of(args: list) -> Selection:
    fields: dict = {name: [] for name in OPTION.values()}
    for flag, value in zip(args[::2], args[1::2]):
        fields[OPTION[flag]].append(value)
    return Selection(**{k: tuple(v) for k, v in fields.items()})


def predicted(recipe, args: list):
    """(exit code, set of cab-step paths that run) by our rules."""
    try:
        choice = select_steps(recipe, selection_of(args))
    except SelectionError:
        return 1, set()  # Stimela: an uncaught StepSelectionError, exit 1
    if not choice.anything_selected():
        return 0, set()

    def step_at(path):
        level, step = recipe, None
        for label in path:
            step = level.steps[label]
            level = step.recipe
        return step

    def skipped(path):
        forced = choice.forced_skip(path)
        return forced if forced is not None else step_at(path).skip is True

    runs = {p for p in choice.order if step_at(p).cab is not None
            and not any(skipped(p[:i]) for i in range(1, len(p) + 1))}
    return 0, runs


CONF_KEY = {"-s": "select", "-k": "skip_steps", "-t": "tags", "--skip-tags": "skip_tags", "-e": "enable_steps"}


def predicted_by_conf(recipe, args: list):
    """(exit code, cab-step paths that run) when the same options come as a DAG run's conf lists
    (operators/overrides.py, what every task of the DAG applies)."""
    conf: dict = {}
    for flag, value in zip(args[::2], args[1::2]):
        conf.setdefault(CONF_KEY[flag], []).append(value)
    try:
        overrides = parse_overrides(conf, recipe, {})
    except RecipeError:
        return 1, set()
    runs = set()
    for path, step in _cab_steps(recipe):
        forced = overrides.forced_skip(path)
        skipped = forced if forced is not None else step.skip is True
        if overrides.selection_skip(path) is None and not skipped:
            runs.add(path)
    return 0, runs


def _cab_steps(recipe, prefix=()):
    for label, step in recipe.steps.items():
        if step.recipe is not None:
            yield from _cab_steps(step.recipe, prefix + (label,))
        else:
            yield prefix + (label,), step


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    need_stimela()
    base = tmp_path_factory.mktemp("stimela-selection")

    def one(case):
        proc = stimela_run(base / case, *CASES[case])
        return case, (proc.returncode, ran_paths(base / case), proc.stdout[-2000:])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(pool.map(one, CASES))


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(str(SELECTION_RECIPE))[0]


@pytest.mark.parametrize("case", list(CASES))
def test_same_steps_as_stimela(case, oracle, recipe):
    code, ran, log = oracle[case]
    assert predicted(recipe, CASES[case]) == (code, ran), log
    assert predicted_by_conf(recipe, CASES[case]) == (code, ran), log


def test_unskipped_steps_ignore_skip_if_outputs_and_disabled_wins():
    """-s STEP unskips STEP; -k on the same step still skips it (disabled beats everything)."""
    recipe = load_recipe(str(SELECTION_RECIPE))[0]
    choice = select_steps(recipe, Selection(steps=("held",), skip_steps=("held",)))
    assert ("held",) in choice.unskipped
    assert choice.forced_skip(("held",)) is True
    choice = select_steps(recipe, Selection(steps=("held",)))
    assert choice.forced_skip(("held",)) is False
    assert choice.forced_skip(("a",)) is True
    assert choice.forced_skip(("prep",)) is None  # tagged always: on, as the recipe says


def test_error_names_the_step_and_recipe():
    recipe = load_recipe(str(SELECTION_RECIPE))[0]
    with pytest.raises(SelectionError, match="'nope' not in sub"):
        select_steps(recipe, Selection(skip_steps=("sub.nope",)))
    with pytest.raises(SelectionError, match="'nope' is not a tag of any step of the top recipe"):
        select_steps(recipe, Selection(tags=("nope",)))
