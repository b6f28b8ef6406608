"""The model and activation tables behind the API's /v1/models and /v1/activations (torch-free).

Counting parameters and integrating the activation gains needs torch, which the API must not
load, so the results are stored here as literal data. The block between the markers below is
generated; after a change to the model builders or the activations, regenerate it with

    python -m nfcore.catalog --regenerate

tests/nfcore/test_catalog.py fails, naming that command, when the data and the code disagree.
Treat the rows as read-only: they are shared by every caller.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

REGENERATE_COMMAND: Final[str] = "python -m nfcore.catalog --regenerate"
_BEGIN = "# --- begin generated data"
_END = "# --- end generated data ---"

# --- begin generated data (python -m nfcore.catalog --regenerate; do not edit by hand) ---
# fmt: off
# nfcore.models.model_catalog(): every named model at width 1 with 1000 classes.
MODEL_CATALOG: Final[tuple[dict[str, Any], ...]] = (
    {"family": "resnetv2", "norm": "nf", "depth": 14, "variant": None, "layout": [1, 1, 1, 1], "parameters": 10064936},
    {"family": "resnetv2", "norm": "nf", "depth": 26, "variant": None, "layout": [2, 2, 2, 2], "parameters": 15995176},
    {"family": "resnetv2", "norm": "nf", "depth": 50, "variant": None, "layout": [3, 4, 6, 3], "parameters": 25557032},
    {"family": "resnetv2", "norm": "nf", "depth": 101, "variant": None, "layout": [3, 4, 23, 3], "parameters": 44549160},
    {"family": "resnetv2", "norm": "nf", "depth": 152, "variant": None, "layout": [3, 8, 36, 3], "parameters": 60192808},
    {"family": "resnetv2", "norm": "nf", "depth": 200, "variant": None, "layout": [3, 24, 36, 3], "parameters": 64673832},
    {"family": "resnetv2", "norm": "nf", "depth": 288, "variant": None, "layout": [24, 24, 24, 24], "parameters": 146460456},
    {"family": "resnetv2", "norm": "nf", "depth": 600, "variant": None, "layout": [50, 50, 50, 50], "parameters": 300646696},
    {"family": "resnetv2", "norm": "bn", "depth": 14, "variant": None, "layout": [1, 1, 1, 1], "parameters": 10057256},
    {"family": "resnetv2", "norm": "bn", "depth": 26, "variant": None, "layout": [2, 2, 2, 2], "parameters": 15987496},
    {"family": "resnetv2", "norm": "bn", "depth": 50, "variant": None, "layout": [3, 4, 6, 3], "parameters": 25549352},
    {"family": "resnetv2", "norm": "bn", "depth": 101, "variant": None, "layout": [3, 4, 23, 3], "parameters": 44541480},
    {"family": "resnetv2", "norm": "bn", "depth": 152, "variant": None, "layout": [3, 8, 36, 3], "parameters": 60185128},
    {"family": "resnetv2", "norm": "bn", "depth": 200, "variant": None, "layout": [3, 24, 36, 3], "parameters": 64666152},
    {"family": "resnetv2", "norm": "bn", "depth": 288, "variant": None, "layout": [24, 24, 24, 24], "parameters": 146452776},
    {"family": "resnetv2", "norm": "bn", "depth": 600, "variant": None, "layout": [50, 50, 50, 50], "parameters": 300639016},
    {"family": "resnetv1", "norm": "bn", "depth": 14, "variant": None, "layout": [1, 1, 1, 1], "parameters": 10064936},
    {"family": "resnetv1", "norm": "bn", "depth": 26, "variant": None, "layout": [2, 2, 2, 2], "parameters": 15995176},
    {"family": "resnetv1", "norm": "bn", "depth": 50, "variant": None, "layout": [3, 4, 6, 3], "parameters": 25557032},
    {"family": "resnetv1", "norm": "bn", "depth": 101, "variant": None, "layout": [3, 4, 23, 3], "parameters": 44549160},
    {"family": "resnetv1", "norm": "bn", "depth": 152, "variant": None, "layout": [3, 8, 36, 3], "parameters": 60192808},
    {"family": "resnetv1", "norm": "bn", "depth": 200, "variant": None, "layout": [3, 24, 36, 3], "parameters": 64673832},
    {"family": "resnetv1", "norm": "bn", "depth": 288, "variant": None, "layout": [24, 24, 24, 24], "parameters": 146460456},
    {"family": "resnetv1", "norm": "bn", "depth": 600, "variant": None, "layout": [50, 50, 50, 50], "parameters": 300646696},
    {"family": "nf_regnet", "norm": "nf", "depth": None, "variant": "B0", "layout": [1, 3, 6, 6], "parameters": 8595372},
    {"family": "nf_regnet", "norm": "nf", "depth": None, "variant": "B1", "layout": [2, 4, 7, 7], "parameters": 10019208},
    {"family": "nf_regnet", "norm": "nf", "depth": None, "variant": "B2", "layout": [2, 4, 8, 8], "parameters": 13785904},
    {"family": "nf_regnet", "norm": "nf", "depth": None, "variant": "B3", "layout": [2, 5, 9, 9], "parameters": 18136667},
    {"family": "nf_regnet", "norm": "nf", "depth": None, "variant": "B4", "layout": [2, 6, 11, 11], "parameters": 29315830},
    {"family": "nf_regnet", "norm": "nf", "depth": None, "variant": "B5", "layout": [3, 7, 14, 14], "parameters": 48707138},
)
# nfcore.activations.gamma_table() for the built-in activations, plus the He gain
# 1/sqrt(E[g(x)^2]) (nfcore.activations.he_gain).
GAMMA_TABLE: Final[tuple[dict[str, Any], ...]] = (
    {"name": "relu", "quadrature": 1.71285855045, "sampled": 1.72089744505, "analytic": 1.71285855045, "he_gain": 1.41421356237},
    {"name": "silu", "quadrature": 1.7871872221, "sampled": 1.79614985962, "analytic": None, "he_gain": 1.67653247033},
    {"name": "gelu", "quadrature": 1.70092624336, "sampled": 1.70943677654, "analytic": None, "he_gain": 1.5335304412},
    {"name": "tanh", "quadrature": 1.59253741972, "sampled": 1.59671805898, "analytic": None, "he_gain": 1.59253741972},
    {"name": "identity", "quadrature": 1.0, "sampled": 1.00212678663, "analytic": 1.0, "he_gain": 1.0},
    {"name": "elu", "quadrature": 1.27084341785, "sampled": 1.27572919838, "analytic": None, "he_gain": 1.2451983007},
    {"name": "selu", "quadrature": 1.0, "sampled": 1.00335440003, "analytic": None, "he_gain": 1.0},
    {"name": "softplus", "quadrature": 1.91912598011, "sampled": 1.92726317048, "analytic": None, "he_gain": 1.04186683554},
    {"name": "sigmoid", "quadrature": 4.80131337204, "sampled": 4.81313010283, "analytic": None, "he_gain": 1.84622854534},
    {"name": "leaky_relu", "quadrature": 1.70483162718, "sampled": 1.71280083192, "analytic": 1.70483162718, "he_gain": 1.414142857},
    {"name": "mish", "quadrature": 1.5920253811, "sampled": 1.59965517434, "analytic": None, "he_gain": 1.48684758127},
)
# fmt: on
# --- end generated data ---


def current_model_catalog() -> list[dict[str, Any]]:
    """The model rows computed now from the builders (loads torch)."""
    from nfcore.models import model_catalog

    return model_catalog()


# Significant digits kept of every gain: they are accurate to about 1e-12 (quadrature) or far
# less (sampling), and a vectorized float64 kernel of another CPU (AVX2, AVX-512 or neither)
# may round the last bit otherwise, which must not change the file.
GAIN_DIGITS: Final = 12


def current_gamma_table() -> list[dict[str, Any]]:
    """The activation rows computed now (loads torch): the built-ins only, never registered ones.

    Every gain is float64 arithmetic on inputs that are the same on every CPU (the sampled
    estimate draws NumPy's normals), rounded to `GAIN_DIGITS`, so the file does not depend
    on the machine that wrote it (tests/nfcore/test_catalog.py recomputes it with another set
    of CPU kernels).
    """
    from nfcore.activations import gamma_table, he_gain
    from nfcore.registry import BUILTIN_ACTIVATIONS

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


def _rows(rows: list[dict[str, Any]]) -> str:
    return "".join(f"    {_literal(row)},\n" for row in rows)


def regenerate(path: Path | None = None) -> Path:
    """Recompute both tables and rewrite the generated block of this module's source file."""
    path = path or Path(__file__)
    lines = path.read_text().splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.startswith(_BEGIN))
    end = next(i for i, line in enumerate(lines) if line.startswith(_END))
    block = (
        "# fmt: off\n"
        "# nfcore.models.model_catalog(): every named model at width 1 with 1000 classes.\n"
        "MODEL_CATALOG: Final[tuple[dict[str, Any], ...]] = (\n"
        f"{_rows(current_model_catalog())}"
        ")\n"
        "# nfcore.activations.gamma_table() for the built-in activations, plus the He gain\n"
        "# 1/sqrt(E[g(x)^2]) (nfcore.activations.he_gain).\n"
        "GAMMA_TABLE: Final[tuple[dict[str, Any], ...]] = (\n"
        f"{_rows(current_gamma_table())}"
        ")\n"
        "# fmt: on\n"
    )
    path.write_text("".join([*lines[: begin + 1], block, *lines[end:]]))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nfcore.catalog",
        description="The static model and activation tables that the API serves.",
    )
    parser.add_argument(
        "--regenerate",
        action="store_true",
        help="recompute the tables (needs torch) and rewrite them in nfcore/catalog.py",
    )
    args = parser.parse_args(argv)
    if not args.regenerate:
        parser.print_help()
        return 2
    path = regenerate()
    sys.stderr.write(f"rewrote the generated tables in {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
