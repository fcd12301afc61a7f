"""Validate EMUR-PS documents against the ministry's XSD (xmlschema, an independent validator).

usage: validate.py EMUR-PS.xsd FILE.xml...   exit 0 when every file is valid; else the errors.
"""
import sys

import xmlschema


def main() -> int:
    schema = xmlschema.XMLSchema10(sys.argv[1])
    bad = 0
    for path in sys.argv[2:]:
        errors = list(schema.iter_errors(path))
        for e in errors[:20]:
            print(f"{path}: {e.reason} at {e.path}", file=sys.stderr)
        bad += bool(errors)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
