"""Oracle (runs INSIDE .oracle-venv): what OmegaConf makes of YAML values for typed fields.

Usage::

    .oracle-venv/bin/python tests/oracle/stimela_coerce.py > tests/oracle/coerce_cases.json

Stimela 2.1.4 reads parameter schemas, policies and backend options through OmegaConf
dataclass schemas; each case here is a field type and a value, and the result is the converted
value or "error". tests/test_stimela_verdicts.py checks recipe/coerce.py against it.
"""

import dataclasses
import json
from typing import Dict, List, Optional, Union

from omegaconf import OmegaConf

TYPES = {"bool": bool, "int": int, "float": float, "str": str, "Dict[str, str]": Dict[str, str],
         "List[str]": List[str], "Union[bool, str]": Union[bool, str], "Optional[int]": Optional[int]}
VALUES = [True, False, 0, 1, 2, -1, 1.0, 2.5, "0", "1", "2", "yes", "no", "y", "n", "on", "off", "true", "False",
          "maybe", "", "3.5", "12", None, [1, "a"], ["x"], {"a": 1}, {"a": True, "b": "c"}, {"1": 2}]


def convert(tp, value):
    holder = dataclasses.make_dataclass("Holder", [("field", tp)])  # no default: MISSING until merged
    try:
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(holder), {"field": value}))["field"]
    except Exception:  # noqa: BLE001 - any rejection is a verdict
        return "error"


def main():
    cases = [{"type": name, "value": value, "result": convert(tp, value)}
             for name, tp in TYPES.items() for value in VALUES]
    print(json.dumps(cases, indent=0))


if __name__ == "__main__":
    main()
