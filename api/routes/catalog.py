"""/v1/models, /v1/activations, /v1/presets, /v1/limits: what can be asked for (no torch)."""

from __future__ import annotations

import redis
from fastapi import APIRouter

from api.deps import Admit, Settings
from api.schemas import ActivationRow, Limits, ModelRow
from nfcore.spec.catalog import GAMMA_TABLE, model_catalog
from nfcore.spec.presets import PRESETS, Preset

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/models", response_model=list[ModelRow], summary="Families, depths, variants, plugins")
def models(admission: Admit) -> list[ModelRow]:
    """Every named model at width 1 with 1000 classes, with its parameter count; then every
    model plugin a live worker has (family 'plugin'), with its argument schema."""
    rows = [ModelRow(**row) for row in model_catalog()]
    try:
        plugins = admission.plugins()
    except redis.RedisError:  # the built-in catalog needs no Redis
        plugins = {}
    for name, info in plugins.items():
        fields = {k: info.get(k) for k in ModelRow.model_fields if k in info and k != "family"}
        rows.append(ModelRow(**{**fields, "family": "plugin", "plugin": name, "norm": None,
                                "depth": None, "variant": None, "layout": None,
                                "parameters": info.get("parameters")}))  # fmt: skip
    return rows


@router.get("/activations", response_model=list[ActivationRow], summary="Activations and gains")
def activations() -> list[ActivationRow]:
    """Each nonlinearity's gamma = 1/sqrt(Var g(x)): by quadrature and by the paper's sampling."""
    return [ActivationRow(**row) for row in GAMMA_TABLE]


@router.get("/presets", response_model=list[Preset], summary="The paper's SPP figures")
def presets() -> list[Preset]:
    """Figs. 1, 2 and 6-11 as configs (scaled to run in seconds), each with its finding."""
    return list(PRESETS)


@router.get("/limits", response_model=Limits, summary="The resource limits a job must meet")
def limits(settings: Settings) -> Limits:
    """The limits a job is checked against (a 422 names the one it is over), so a client can
    bound its own inputs: the dashboard's Steps control stops at `max_train_steps`."""
    return Limits(**{name: getattr(settings, name) for name in Limits.model_fields})
