"""The static tables the API serves must be what the builders and the gain functions compute."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nfcore.spec.catalog
from nfcore.engine.activations import gamma_table, he_gain
from nfcore.engine.models import build_model
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS
from nfcore.spec.catalog import GAMMA_TABLE, REGENERATE_COMMAND, model_catalog
from nfcore.spec.config import ModelConfig
from tools import regenerate_gamma_table
from tools.regenerate_gamma_table import GAIN_DIGITS

REPO_ROOT = Path(__file__).resolve().parents[3]
STALE = f"nfcore/spec/catalog.py is out of date; run `{REGENERATE_COMMAND}`"


def test_model_catalog_counts_what_the_builders_build() -> None:
    """Every row's parameters (the cost model's, torch-free) are the built network's, counted
    on the meta device (no memory, no initialization)."""
    rows = model_catalog()
    assert len(rows) == 30
    for row in rows:
        key = "variant" if row["variant"] is not None else "depth"
        config = ModelConfig(family=row["family"], norm=row["norm"], **{key: row[key]})
        with torch.device("meta"):
            built = sum(p.numel() for p in build_model(config).parameters())
        assert row["parameters"] == built, row


def test_gamma_table_matches_the_gain_functions() -> None:
    computed = gamma_table(BUILTIN_ACTIVATIONS)
    assert [row["name"] for row in GAMMA_TABLE] == [row.name for row in computed], STALE
    digits = 10 ** (1 - GAIN_DIGITS)  # the file keeps GAIN_DIGITS significant digits
    for row, fresh in zip(GAMMA_TABLE, computed, strict=True):
        assert set(row) == {"name", "quadrature", "sampled", "analytic", "he_gain"}
        assert row["quadrature"] == pytest.approx(fresh.quadrature, rel=digits), STALE
        assert row["he_gain"] == pytest.approx(he_gain(fresh.name), rel=digits), STALE
        if fresh.analytic is None:
            assert row["analytic"] is None, STALE
        else:
            assert row["analytic"] == pytest.approx(fresh.analytic, rel=digits), STALE
        assert row["sampled"] == pytest.approx(fresh.sampled, rel=digits), STALE


def test_gamma_table_holds_the_papers_relu_gains() -> None:
    relu = next(row for row in GAMMA_TABLE if row["name"] == "relu")
    # Section 4.3: gamma = sqrt(2) / sqrt(1 - 1/pi); Fig. 8: He's gain sqrt(2) is lower.
    assert relu["quadrature"] == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)), rel=1e-11)
    assert relu["he_gain"] == pytest.approx(math.sqrt(2), rel=1e-11)
    assert relu["sampled"] == pytest.approx(relu["quadrature"], rel=0.01)


def test_tables_are_json() -> None:
    rows = model_catalog()
    assert json.loads(json.dumps(rows)) == rows
    assert json.loads(json.dumps(GAMMA_TABLE)) == list(GAMMA_TABLE)


def test_regenerating_reproduces_the_file(tmp_path: Path) -> None:
    # The generated block must survive `ruff format` unchanged and be rewritten byte for byte
    # from the same data. The data is the code's (the tests above, within the precision a
    # CPU's float32 sums allow), so it is given here and not computed again on this CPU.
    copy = tmp_path / "catalog.py"
    shutil.copy(nfcore.spec.catalog.__file__, copy)
    regenerate_gamma_table.regenerate(copy, rows=list(GAMMA_TABLE))
    assert copy.read_text() == Path(nfcore.spec.catalog.__file__).read_text(), STALE


def test_the_gamma_table_is_the_same_with_another_cpus_kernels() -> None:
    """On a CPU without AVX2 (ATEN_CPU_CAPABILITY=default: torch's plain C++ kernels) the
    generated table is written exactly as here, digit for digit."""
    code = (
        "import json, torch\n"
        "from tools.regenerate_gamma_table import current_gamma_table\n"
        "assert torch.backends.cpu.get_cpu_capability() == 'DEFAULT'\n"
        "print(json.dumps(current_gamma_table()))\n"
    )
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == list(GAMMA_TABLE), STALE


def test_catalog_and_presets_do_not_load_torch() -> None:
    # STYLE.md: the API imports these and never torch.
    code = (
        "import json, sys\n"
        "import nfcore.spec.catalog, nfcore.spec.presets\n"
        "json.dumps([nfcore.spec.catalog.model_catalog(), nfcore.spec.catalog.GAMMA_TABLE])\n"
        "[p.model_dump_json() for p in nfcore.spec.presets.PRESETS]\n"
        "config = nfcore.spec.presets.get_preset('fig1').runs[0].config\n"
        "nfcore.spec.presets.rescale_config(config, width=0.5, depth=50)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
