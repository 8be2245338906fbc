"""Validates sealed FHIR resources as R4 with fhir.resources (module R4B).

Usage: validate_r4.py DIR [--originals ORIGINALS_DIR]

Every DIR/*.json must validate, and must keep the FHIR JSON rules that fhir.resources
leaves unchecked (see json_rules). R4B is R4 with a few changes (renamed elements in some
resources), so a sealed file that does not validate is a failure only when its original
(ORIGINALS_DIR/<same name>, when given) does validate; otherwise it is counted as an R4/R4B difference of the
example itself. Exits 1 on any failure, or if there is nothing to validate.
"""
import argparse
import json
import re
import pathlib
import sys

from fhir.resources.R4B import get_fhir_model_class


def json_rules(value, where, problems):
    """The FHIR JSON rules (json.html) and invariants that fhir.resources does not check, and that
    a transform removing values could break: ele-1 (no empty elements), no empty or all-null
    arrays, parallel `name`/`_name` arrays of one length, ext-1 (an extension has a url and a
    value or extensions, not both), obs-6 (no value[x] beside a dataAbsentReason)."""
    if isinstance(value, dict):
        if not value:
            problems.append(f"{where}: empty object (ele-1)")
        if re.search(r"[eE]xtension\[\d+\]$", where):
            has_value = any(k.startswith("value") for k in value)
            if has_value == ("extension" in value):
                problems.append(f"{where}: an extension needs a value or extensions, not both (ext-1)")
        if "dataAbsentReason" in value and any(k.startswith("value") and k != "valueSet" for k in value):
            problems.append(f"{where}: value[x] beside dataAbsentReason (obs-6)")
        for key, item in value.items():
            if key.startswith("_") and isinstance(item, list) and isinstance(value.get(key[1:]), list):
                if len(item) != len(value[key[1:]]):
                    problems.append(f"{where}.{key}: not as long as {key[1:]}")
            json_rules(item, f"{where}.{key}", problems)
    elif isinstance(value, list):
        if not value:
            problems.append(f"{where}: empty array")
        elif all(item is None for item in value):
            problems.append(f"{where}: only nulls")
        for i, item in enumerate(value):
            json_rules(item, f"{where}[{i}]", problems)
    return problems


def check(document):
    try:
        get_fhir_model_class(document["resourceType"]).model_validate(document)
    except Exception as error:  # pydantic's ValidationError, or an unknown resourceType
        return str(error).splitlines()[0:6]
    problems = json_rules(document, document["resourceType"], [])
    return problems[:6] or None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("sealed")
    parser.add_argument("--originals", help="where the unsealed originals are; without it every invalid file fails")
    args = parser.parse_args()
    sealed_files = sorted(pathlib.Path(args.sealed).glob("*.json"))
    if not sealed_files:
        print(f"validate_r4: nothing to validate in {args.sealed}", file=sys.stderr)
        return 1
    valid, differences, failures = 0, [], []
    for path in sealed_files:
        problem = check(json.loads(path.read_text(encoding="utf-8")))
        if problem is None:
            valid += 1
            continue
        original = pathlib.Path(args.originals) / path.name if args.originals else None
        if original and original.exists() and check(json.loads(original.read_text(encoding="utf-8"))) is not None:
            differences.append(path.name)
        else:
            failures.append((path.name, problem))
    print(
        f"validate_r4: {args.sealed}: {valid} resources valid R4 (fhir.resources R4B); "
        f"{len(differences)} whose original example is not valid R4B either; {len(failures)} failures"
    )
    for name in differences:
        print(f"  original not valid R4B: {name}")
    for name, problem in failures:
        print(f"  INVALID {name}:")
        for line in problem:
            print(f"    {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
