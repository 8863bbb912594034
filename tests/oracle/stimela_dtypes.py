"""Oracle (runs INSIDE .oracle-venv): validate values against dtypes with Stimela 2.1.4 itself.

Usage: ``.oracle-venv/bin/python tests/oracle/stimela_dtypes.py dtype_cases.json golden/dtypes.json``

Input: JSON ``[[dtype, value], ...]``. Output: ``{"cases": [{"dtype", "value", "ok"|"error"}]}``.
Each case goes through ``scabha.validate.validate_parameters`` (Stimela's file handling and
pydantic v1), with existence checks off, in a scratch working directory (paths are normalised
relative to it). Known, deliberate divergences are marked with ``divergence``.
"""
import json
import os
import sys
import tempfile

# Stimela fails on these; we accept them (see docs of recipe/dtypes.py)
DIVERGENCES = {
    "complex": "Stimela has no validator for complex (pydantic RuntimeError); we use complex()",
    "Optional[List[any]]": "Stimela crashes on builtin 'any'; we read it as Any",
}


def main():
    from scabha.cargo import Parameter
    from scabha.validate import validate_parameters

    with open(sys.argv[1]) as fh:
        cases = json.load(fh)
    out_path = os.path.abspath(sys.argv[2])
    os.chdir(tempfile.mkdtemp(prefix="stepcab-dtypes-"))
    results = []
    for dtype, value in cases:
        rec = {"dtype": dtype, "value": value}
        try:
            out = validate_parameters({"x": value}, {"x": Parameter(dtype=dtype)}, check_inputs_exist=False,
                                      check_outputs_exist=False, check_required=False)
            v = out.get("x")
            rec["ok"] = list(v) if isinstance(v, tuple) else v
        except Exception as exc:  # noqa: BLE001 - any failure is an error case
            rec["error"] = f"{type(exc).__name__}: {exc}"
        if dtype in DIVERGENCES:
            rec["divergence"] = DIVERGENCES[dtype]
        results.append(rec)
    with open(out_path, "w") as fh:
        json.dump({"cases": results}, fh, indent=1, default=repr)
        fh.write("\n")


if __name__ == "__main__":
    main()
