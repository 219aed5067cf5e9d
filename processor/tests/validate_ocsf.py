"""Validates OCSF records, one JSON object per line on stdin, against the official OCSF schema of
the version each declares (`metadata.version`), for its class (`class_uid`), with the profiles
it declares (`metadata.profiles`).

The schema is the one OCSF publishes (schema.ocsf.io's export of each version), as shipped by
the PyPI package `ocsf-json-schema`, which also turns it into a JSON Schema (draft 2020-12,
with OCSF's "at least one of" and "just one of" constraints); `jsonschema` validates against
it. Neither is part of callproof: an independent check of what the processor writes.

Beyond the schema (which leaves `unmapped` open), a `null` anywhere is an error: OCSF omits
absent values.

Prints one line per problem (`record N (kind): path: message`) and exits 1 if there is any;
prints `N records valid` and exits 0 otherwise.
"""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema, get_packaged_versions

validators = {}


def validator_for(version, class_uid, profiles):
    key = (version, class_uid, tuple(sorted(profiles)))
    if key not in validators:
        if version not in get_packaged_versions():
            raise LookupError(f"OCSF version {version!r} is not a released version")
        schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
        class_name = schema.lookup_class_name_from_uid(class_uid=class_uid)
        json_schema = schema.get_class_schema(class_name=class_name, profiles=list(profiles))
        Draft202012Validator.check_schema(json_schema)
        validators[key] = Draft202012Validator(json_schema)
    return validators[key]


def nulls(value, path=""):
    if value is None:
        yield path or "/"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from nulls(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from nulls(item, f"{path}/{index}")


def problems(record):
    metadata = record.get("metadata") if isinstance(record, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("version"), str):
        yield "/metadata/version: missing"
        return
    if not isinstance(record.get("class_uid"), int):
        yield "/class_uid: missing"
        return
    try:
        validator = validator_for(
            metadata["version"], record["class_uid"], metadata.get("profiles") or []
        )
    except (LookupError, KeyError, ValueError) as error:
        yield f"/metadata/version: {error}"
        return
    for error in sorted(validator.iter_errors(record), key=lambda error: error.json_path):
        yield f"{error.json_path}: {error.message}"
    for path in nulls(record):
        yield f"{path}: null (absent values must be omitted)"


def main():
    n_records, n_problems = 0, 0
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        kind = record.get("activity_name", "?")
        if record.get("unmapped", {}).get("callproof", {}).get("truncated"):
            kind += ", stub"
        for problem in problems(record):
            print(f"record {n_records} ({kind}): {problem}")
            n_problems += 1
        n_records += 1
    if n_problems:
        print(f"{n_problems} problems in {n_records} records")
        sys.exit(1)
    print(f"{n_records} records valid")


if __name__ == "__main__":
    main()
