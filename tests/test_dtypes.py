"""Tests for recipe/dtypes.py (parsing, pydantic-v1-like coercion, JSON schema)."""

import glob
import json
import os

import pytest
import yaml

from airflow_provider_stepcab.recipe.dtypes import DType, normalize_path, parse_dtype

GOLDEN = os.path.join(os.path.dirname(__file__), "oracle", "golden", "dtypes.json")


@pytest.mark.parametrize("text,canonical", [
    ("str", "str"), ("int", "int"), ("float", "float"), ("bool", "bool"), ("complex", "complex"),
    ("Any", "Any"), ("None", "None"), ("File", "File"), ("Directory", "Directory"), ("MS", "MS"), ("URI", "URI"),
    ("List[int]", "List[int]"), ("List[ Union[int,str] ]", "List[Union[int, str]]"),
    ("Tuple[int, int]", "Tuple[int, int]"), ("Tuple[int, ...]", "Tuple[int, ...]"),
    ("Dict[str, Any]", "Dict[str, Any]"), ("Optional[int]", "Optional[int]"),
    ("Union[int, None]", "Optional[int]"), ("Optional[Union[int, str]]", "Union[int, str, None]"),
    ("Union[int, Union[str, int]]", "Union[int, str]"), ("Union[int]", "int"),
    ("list", "List"), ("dict", "Dict"), ("tuple", "Tuple"), ("List", "List"),
    ("typing.List[str]", "List[str]"), ("  int  ", "int"), ("Optional[List[any]]", "Optional[List[Any]]"),
])
def test_parse_canonical(text, canonical):
    assert str(parse_dtype(text)) == canonical


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"), ("Foo", "unknown type 'Foo'"), ("List[", "expected a type name"),
    ("List[int", "expected ']'"), ("List[int, str]", "List takes one argument"),
    ("Dict[str]", "Dict takes two arguments"), ("int[str]", "int takes no arguments"),
    ("Union", "needs arguments"), ("List[int]]", "unexpected ']'"), ("List[...]", "expected a type name"),
    ("Union[int, ...]", "only allowed as Tuple"), ("__import__('os')", "unexpected character"),
    ("str; rm -rf", "unexpected character"),
])
def test_parse_errors(text, fragment):
    with pytest.raises(ValueError) as exc:
        parse_dtype(text)
    assert fragment in str(exc.value)
    assert "invalid dtype" in str(exc.value)


def test_parse_error_names_column():
    with pytest.raises(ValueError, match="column 6"):
        parse_dtype("List[Foo]")


def test_non_string_dtype():
    with pytest.raises(ValueError):
        parse_dtype(3)  # type: ignore[arg-type]


def test_every_cultcargo_dtype_parses():
    cultcargo = pytest.importorskip("cultcargo")
    root = os.path.dirname(cultcargo.__file__)
    seen = set()

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "dtype" and isinstance(v, str):
                    seen.add(v)
                walk(v)
        elif isinstance(node, list):
            for x in node:
                walk(x)

    for path in glob.glob(os.path.join(root, "**", "*.y*ml"), recursive=True):
        with open(path) as fh:
            walk(yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    assert len(seen) > 30
    for text in seen:
        parse_dtype(text)


def test_predicates():
    assert parse_dtype("File").is_file_type and parse_dtype("File").is_file
    assert parse_dtype("List[MS]").is_file_type and parse_dtype("List[MS]").is_file_list
    assert not parse_dtype("Optional[File]").is_file_type
    assert parse_dtype("Optional[File]").contains_files()
    assert parse_dtype("List[int]").is_list and parse_dtype("Tuple[int, int]").is_list
    assert not parse_dtype("str").is_list
    assert parse_dtype("bool").is_bool


@pytest.mark.parametrize("dtype,value,expected", [
    ("int", "3", 3), ("int", 3.7, 3), ("int", True, 1), ("int", " 4 ", 4), ("float", "3", 3.0),
    ("str", 3, "3"), ("str", True, "True"), ("bool", "yes", True), ("bool", "OFF", False), ("bool", 1, True),
    ("List[int]", ["1", 2], [1, 2]), ("List[File]", "a.fits", ["a.fits"]),
    ("List[File]", "[a.fits, b.fits]", ["a.fits", "b.fits"]), ("File", ["x.fits"], "x.fits"), ("File", [], ""),
    ("Union[str, List[str]]", ["a"], ["a"]), ("Union[str, float]", 3, "3"), ("Union[int,str]", "3", 3),
    ("Union[int,str]", "x", "x"), ("Optional[int]", None, None), ("Tuple[int, int]", ["1", "2"], (1, 2)),
    ("Tuple[int, ...]", [1, "2", 3], (1, 2, 3)), ("Dict[str, int]", {"a": "1"}, {"a": 1}),
    ("Any", {"a": 1}, {"a": 1}), ("complex", "1+2j", 1 + 2j), ("List", (1, "a"), [1, "a"]),
])
def test_validate(dtype, value, expected):
    result = parse_dtype(dtype).validate(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("dtype,value,fragment", [
    ("int", "3.0", "expected an integer"), ("int", None, "none is not an allowed value"),
    ("str", [1], "expected a string"), ("bool", 2, "could not be parsed to a boolean"),
    ("bool", "True ", "boolean"), ("List[int]", 3, "expected a list"), ("List[str]", "a", "expected a list"),
    ("List[int]", [1, "x"], "item 1"), ("Tuple[int, int]", [1, 2, 3], "wrong tuple length 3"),
    ("Dict", "x", "expected a mapping"), ("File", ["a", "b"], "multiple files"), ("File", 3, "expected a path"),
    ("Union[int, List[int]]", "x", "matches none of Union[int, List[int]]"),
])
def test_validate_errors(dtype, value, fragment):
    with pytest.raises(ValueError, match=None) as exc:
        parse_dtype(dtype).validate(value)
    assert fragment in str(exc.value)


def test_normalize_paths(tmp_path):
    cwd = str(tmp_path)
    assert parse_dtype("File").validate("./sub/../x.fits", cwd=cwd) == "x.fits"
    assert parse_dtype("MS").validate(os.path.join(cwd, "a.ms"), cwd=cwd) == "a.ms"
    assert parse_dtype("URI").validate("s3://bucket/x", cwd=cwd) == "s3://bucket/x"
    assert parse_dtype("File").validate("file:///nonexistent-root/y", cwd=cwd) == "/nonexistent-root/y"
    assert parse_dtype("List[File]").validate(["a", "/nonexistent-root/b"], cwd=cwd) == ["a", "/nonexistent-root/b"]
    assert normalize_path(".", cwd) == "."


@pytest.mark.parametrize("dtype,schema", [
    ("str", {"type": "string"}), ("int", {"type": "integer"}), ("float", {"type": "number"}),
    ("bool", {"type": "boolean"}), ("Any", {}), ("File", {"type": "string", "format": "path"}),
    ("URI", {"type": "string", "format": "uri"}),
    ("List[int]", {"type": "array", "items": {"type": "integer"}}), ("List", {"type": "array"}),
    ("Optional[str]", {"type": ["string", "null"]}),
    ("Union[str, List[str]]", {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
    ("Tuple[int, float]", {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "number"}],
                           "minItems": 2, "maxItems": 2}),
    ("Dict[str, int]", {"type": "object", "additionalProperties": {"type": "integer"}}),
    ("Optional[Any]", {}),
])
def test_json_schema(dtype, schema):
    assert parse_dtype(dtype).json_schema() == schema


def test_dtype_is_hashable_and_cached():
    assert parse_dtype("List[int]") is parse_dtype("List[int]")
    assert {parse_dtype("int"): 1}[DType("int")] == 1


def _golden_cases():
    if not os.path.exists(GOLDEN):
        return []
    with open(GOLDEN) as fh:
        return json.load(fh)["cases"]


@pytest.mark.parametrize("case", _golden_cases(), ids=lambda c: f"{c['dtype']}={c['value']!r}")
def test_validate_matches_stimela(case, tmp_path):
    """Golden results from Stimela 2.1.4 (scabha validate_parameters + pydantic v1)."""
    dtype = parse_dtype(case["dtype"])
    if case.get("divergence"):  # Stimela crashes here; we accept the value (documented divergence)
        expected = complex(case["value"]) if case["dtype"] == "complex" else case["value"]
        assert dtype.validate(case["value"], cwd=str(tmp_path)) == expected
        return
    if "error" in case:
        with pytest.raises(ValueError):
            dtype.validate(case["value"], cwd=str(tmp_path))
    else:
        result = dtype.validate(case["value"], cwd=str(tmp_path))
        assert json.loads(json.dumps(result)) == case["ok"]
