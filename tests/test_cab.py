"""Tests for recipe/cab.py (cab fields, flavours, images, dynamic schemas)."""

import sys
import types

import pytest

from airflow_provider_stepcab.recipe.cab import apply_dynamic_schema, build_cab, load_dynamic_schema
from airflow_provider_stepcab.recipe.errors import Problems, RecipeError
from airflow_provider_stepcab.recipe.model import ImageSpec
from airflow_provider_stepcab.recipe.yamlio import load_yaml_text


def cab_of(text, strict=False, name="c"):
    node = load_yaml_text(text, "cabs.yml")
    problems = Problems()
    return build_cab(name, node, f"cabs.{name}", problems, strict=strict), problems


def test_full_cab():
    cab, problems = cab_of("""
name: ignored-display-name
info: a tool
command: tool --flag
args: [a, "{recipe.x}"]
flavour: {kind: python, output: out, interpreter_command: "{python} -u"}
image: {registry: quay.io/stimela2, name: tool, version: "1.0", path: /img/tool.sif}
inputs:
  x: "int = 1"
  sec: {a: str, b: "File*"}
outputs:
  out: File
defaults:
  sec: {a: hello}
policies: {prefix: "-", replace: {_: "-"}}
backend: {select: native, native: {virtual_env: /venv}}
parameter_passing: yaml
management:
  environment: {A: "1"}
  cleanup: {x: ["*.tmp"]}
  wranglers: {"ERROR": [ERROR]}
extra_info: {See: docs}
preamble: {x: ["=1"]}
""")
    assert not problems, [str(p) for p in problems]
    assert cab.command == "tool --flag" and cab.args == ["a", "{recipe.x}"] and cab.info == "a tool"
    assert cab.flavour.kind == "python" and cab.flavour.options == {"output": "out",
                                                                    "interpreter_command": "{python} -u"}
    assert cab.image == ImageSpec("quay.io/stimela2", "tool", "1.0", "/img/tool.sif")
    assert list(cab.inputs) == ["x", "sec.a", "sec.b"] and list(cab.outputs) == ["out"]
    assert cab.outputs["out"].is_output and not cab.inputs["x"].is_output
    assert cab.defaults == {"sec.a": "hello"}
    assert cab.policies.prefix == "-" and cab.policies.replace == {"_": "-"}
    assert cab.backend["native"]["virtual_env"] == "/venv"
    assert cab.parameter_passing == "yaml"
    assert cab.management.environment == {"A": "1"} and "ERROR" in cab.management.wranglers
    assert list(cab.schema) == ["x", "sec.a", "sec.b", "out"]
    assert cab.loc.file == "cabs.yml"


@pytest.mark.parametrize("spec,expected", [
    ("quay.io/stimela2/breizorro:cc0.2.1", ImageSpec("quay.io/stimela2", "breizorro", "cc0.2.1")),
    ("breizorro", ImageSpec(None, "breizorro", "latest")),
    ("org/img", ImageSpec("org", "img", "latest")),
])
def test_image_strings(spec, expected):
    cab, problems = cab_of(f"command: x\nimage: {spec}\n")
    assert cab.image == expected and not problems


def test_image_path_only_names_itself():
    cab, problems = cab_of("command: x\nimage: {path: /a/b/tool.sif}\n")
    assert cab.image.name == "tool.sif" and not problems


@pytest.mark.parametrize("flavour,kind", [("binary", "binary"), ("python-code", "python-code"),
                                          ("casa-task", "casa-task"), ("{kind: python}", "python")])
def test_flavours(flavour, kind):
    cab, problems = cab_of(f"command: x\nflavour: {flavour}\n")
    assert cab.flavour.kind == kind and not problems


@pytest.mark.parametrize("text,line,fragment", [
    ("info: no command\n", 1, "cab has no 'command'"),
    ("command: x\nflavor: python\n", 2, "spell it 'flavour'"),
    ("command: x\nflavour: perl\n", 2, "unknown flavour 'perl'"),
    ("command: x\nflavour: {output: y}\n", 2, "flavour.kind not specified"),
    ("command: x\nflavour:\n  kind: ruby\n", 3, "unknown flavour.kind 'ruby'"),
    ("command: x\nimage: {version: '1'}\n", 2, "image name or path must be specified"),
    ("command: x\nimage: [a]\n", 2, "invalid image setting"),
    ("command: x\nargs: a b\n", 2, "'args' must be a list"),
    ("command: x\nparameter_passing: json\n", 2, "parameter_passing must be 'args' or 'yaml'"),
    ("command: x\npreamble: {a: '=1'}\n", 2, "preamble.a must be a list of expressions"),
    ("command: x\ndynamic_schema: nodot\n", 2, "'module_name.function_name' expected"),
    ("command: x\ninputs: {a: int}\noutputs: {a: File}\n", 3, "appears in both inputs and outputs"),
    ("command: x\ninputs:\n  a: Lisst[int]\n", 3, "unknown type 'Lisst'"),
])
def test_bad_cabs(text, line, fragment):
    _, problems = cab_of(text)
    msgs = [str(p) for p in problems.errors]
    assert any(fragment in m and m.startswith(f"cabs.yml:{line}: cabs.c") for m in msgs), msgs


def test_unknown_keys_warn_or_error_with_strict():
    text = "command: x\nvirtual_env: /v\nflavour: {kind: python, foo: 1}\nmanagement: {bogus: {}}\n"
    _, problems = cab_of(text)
    assert not problems.errors
    msgs = [str(p) for p in problems.warnings]
    assert any(m.startswith("cabs.yml:2: cabs.c.virtual_env: warning: unknown cab field") for m in msgs), msgs
    assert any("unknown option 'foo' for flavour 'python'" in m for m in msgs)
    assert any("unknown management field 'bogus'" in m for m in msgs)
    _, problems = cab_of(text, strict=True)
    assert len(problems.errors) == 3


def test_stimela_dumped_nulls_accepted():
    """Stimela's config dump writes every field, mostly null: that must load cleanly."""
    cab, problems = cab_of("""
name: null
fqname: null
info: null
extra_info: {}
inputs: {a: {dtype: int, policies: {key_value: null, repeat: null}}}
outputs: {}
defaults: {}
backend: null
dynamic_schema: null
preamble: {}
epilogue: {}
image: null
command: t
args: []
flavour: null
parameter_passing: args
management: {environment: {}, cleanup: {}, wranglers: {}}
policies: {prefix: null, replace: null}
""")
    assert not problems, [str(p) for p in problems]
    assert cab.image is None and cab.flavour.kind == "binary" and cab.policies.prefix is None


def test_missing_dynamic_schema_module_warns():
    cab, problems = cab_of("command: x\ndynamic_schema: no_such_pkg_xyz.mod.func\n")
    assert cab.dynamic_schema == "no_such_pkg_xyz.mod.func"
    (w,) = problems.warnings
    assert "'no_such_pkg_xyz.mod'" in w.message and str(w).startswith("cabs.yml:2:")
    with pytest.raises(RecipeError, match="no_such_pkg_xyz"):
        apply_dynamic_schema(cab, {})


def _install_hook(monkeypatch):
    mod = types.ModuleType("stepcab_test_hook")

    def hook(params, inputs, outputs):
        from scabha.cargo import Parameter  # the shim when scabha isn't installed
        outputs = dict(outputs)
        outputs["image"] = Parameter(dtype="File", implicit=f"{params['prefix']}-image.fits", must_exist=True)
        outputs["cube"] = {"dtype": "List[File]", "implicit": "=GLOB('x*')"}
        return inputs, outputs

    mod.hook = hook
    monkeypatch.setitem(sys.modules, "stepcab_test_hook", mod)


def test_apply_dynamic_schema(monkeypatch):
    _install_hook(monkeypatch)
    cab, problems = cab_of("command: x\ndynamic_schema: stepcab_test_hook.hook\ninputs: {prefix: str}\n")
    assert not problems
    new = apply_dynamic_schema(cab, {"prefix": "img"})
    assert new is not cab and list(cab.outputs) == []
    assert list(new.outputs) == ["image", "cube"]
    assert new.outputs["image"].implicit == "img-image.fits" and new.outputs["image"].is_output
    assert new.outputs["image"].must_exist is True and new.outputs["cube"].dtype.is_file_list
    assert "scabha" not in sys.modules or not hasattr(sys.modules["scabha"], "__stepcab_shim__")


def test_dynamic_schema_failure_is_recipe_error(monkeypatch):
    _install_hook(monkeypatch)
    cab, _ = cab_of("command: x\ndynamic_schema: stepcab_test_hook.hook\n")
    with pytest.raises(RecipeError, match="error evaluating dynamic schema.*KeyError"):
        apply_dynamic_schema(cab, {})


def test_no_dynamic_schema_returns_same_cab():
    cab, _ = cab_of("command: x\n")
    assert apply_dynamic_schema(cab, {}) is cab


def test_wsclean_dynamic_schema_with_shim():
    """cult-cargo's wsclean hook only needs scabha.cargo.Parameter: the shim is enough."""
    pytest.importorskip("cultcargo")
    func = load_dynamic_schema("cultcargo.genesis.wsclean.make_stimela_schema")
    cab, problems = cab_of("command: wsclean\ndynamic_schema: cultcargo.genesis.wsclean.make_stimela_schema\n"
                           "inputs: {prefix: str, nchan: int}\n")
    assert callable(func) and not problems.errors
    new = apply_dynamic_schema(cab, {"prefix": "img", "nchan": 4, "niter": 10})
    assert "restored.mfs" in new.outputs and "restored.per-band" in new.outputs
    assert new.outputs["restored.mfs"].implicit == "{current.prefix}-MFS-image.fits"
    assert new.outputs["dirty.per-band"].dtype.is_file_list
