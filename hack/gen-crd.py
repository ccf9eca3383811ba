"""Writes crds/jobtrigger.yaml from the operator's models (the single source of the schema)."""

import sys
from pathlib import Path

from portico.operator.crd import build_crd, render_crd
from portico.sources.catalog import SOURCE_CLASSES

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    text = render_crd(build_crd(SOURCE_CLASSES))
    target = ROOT / "crds" / "jobtrigger.yaml"
    if "--check" in sys.argv:
        if target.read_text() != text:
            print(f"{target} is out of date: run `make crds`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
