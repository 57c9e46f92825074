#!/usr/bin/env python3
"""Checks compose files against the Compose specification's JSON schema.

    deploy/check-compose.py FILE...

The schema is deploy/schema/compose-spec.json (where it comes from: deploy/schema/README.md).
Each file must be YAML whose document the schema accepts (YAML anchors and merge keys are
resolved first, as Compose does; ${VARIABLE} interpolation is left as text, which the schema
accepts wherever it matters). Prints each file's document as one line of JSON on stdout, for
tests to look further into; errors go to stderr, with exit status 1.

Needs PyYAML and jsonschema (Debian: python3-yaml python3-jsonschema; PyPI: pyyaml
jsonschema).
"""

import json
import os
import sys

import jsonschema
import yaml

SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "compose-spec.json")


def main(files):
    if not files:
        sys.exit(__doc__)
    with open(SCHEMA, encoding="utf-8") as schema_file:
        schema = json.load(schema_file)
    # Draft 7, as its "$schema" says (in a spelling jsonschema does not recognise).
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    failed = False
    for path in files:
        with open(path, encoding="utf-8") as compose_file:
            document = yaml.safe_load(compose_file)
        errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
        for error in errors:
            where = "/".join(str(part) for part in error.absolute_path) or "(top)"
            print(f"{path}: {where}: {error.message}", file=sys.stderr)
        failed = failed or bool(errors)
        print(json.dumps(document))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
