"""`python -m tools.regenerate_gamma_table`: recompute the activations' gains (needs torch)
and rewrite the generated block of nfcore/spec/catalog.py, which the API serves without torch.

A generator of committed data, so it lives here and not in the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from nfcore.spec import catalog

# Significant digits kept of every gain: they are accurate to about 1e-12 (quadrature) or far
# less (sampling), and a vectorized float64 kernel of another CPU (AVX2, AVX-512 or neither)
# may round the last bit otherwise, which must not change the file.
GAIN_DIGITS: Final = 12


def current_gamma_table() -> list[dict[str, Any]]:
    """The activation rows computed now (loads torch): the built-ins only, never registered ones.

    Every gain is float64 arithmetic on inputs that are the same on every CPU (the sampled
    estimate draws NumPy's normals), rounded to `GAIN_DIGITS`, so the file does not depend
    on the machine that wrote it (tests/nfcore/spec/test_catalog.py recomputes it with another
    set of CPU kernels).
    """
    from nfcore.engine.activations import gamma_table, he_gain
    from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS

    return [
        {
            "name": row.name,
            "quadrature": _rounded(row.quadrature),
            "sampled": _rounded(row.sampled),
            "analytic": None if row.analytic is None else _rounded(row.analytic),
            "he_gain": _rounded(he_gain(row.name)),
        }
        for row in gamma_table(BUILTIN_ACTIVATIONS)
    ]


def _rounded(gain: float) -> float:
    return float(f"{gain:.{GAIN_DIGITS}g}")


def _literal(value: Any) -> str:
    """Python source for a JSON-like value; floats by repr, which round-trips exactly."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def regenerate(path: Path | None = None, rows: list[dict[str, Any]] | None = None) -> Path:
    """Rewrite the generated block of nfcore/spec/catalog.py (`path`) with `rows` (default: the
    table computed now)."""
    path = path or Path(catalog.__file__)
    rows = current_gamma_table() if rows is None else rows
    lines = path.read_text().splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.startswith(catalog.BEGIN_MARKER))
    end = next(i for i, line in enumerate(lines) if line.startswith(catalog.END_MARKER))
    block = (
        "# fmt: off\n"
        "# nfcore.engine.activations.gamma_table() for the built-in activations, plus the He gain\n"
        "# 1/sqrt(E[g(x)^2]) (nfcore.engine.activations.he_gain).\n"
        "GAMMA_TABLE: Final[tuple[dict[str, Any], ...]] = (\n"
        + "".join(f"    {_literal(row)},\n" for row in rows)
        + ")\n"
        "# fmt: on\n"
    )
    path.write_text("".join([*lines[: begin + 1], block, *lines[end:]]))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.regenerate_gamma_table",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.parse_args(argv)
    path = regenerate()
    sys.stderr.write(f"rewrote the generated gamma table in {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
