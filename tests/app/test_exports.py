"""The Explorer's downloads: an overlay's CSV holds every shown run, and names say what it is."""

from __future__ import annotations

import csv
import io
import json

from app.exports import file_stem, overlay_csv, slug
from tests.nfcore.plots.test_plots import make_result


def test_an_overlays_csv_holds_every_run_with_its_label_and_config() -> None:
    nf, bn = make_result("nf"), make_result("bn", gradients=True)
    text = overlay_csv([nf, bn], ["NF run", "BN run"], ["aaa", "bbb"])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(nf.blocks) + len(bn.blocks)
    assert {row["label"] for row in rows} == {"NF run", "BN run"}
    first_bn = next(row for row in rows if row["label"] == "BN run")
    assert first_bn["job_id"] == "bbb" and json.loads(first_bn["config"])["norm"] == "bn"
    assert first_bn["grad_avg_channel_var"] != ""
    first_nf = rows[0]
    assert first_nf["grad_avg_channel_var"] == ""  # not measured by that run
    assert float(first_nf["avg_channel_var"]) == nf.blocks[0].avg_channel_var


def test_download_names_are_readable() -> None:
    assert slug("NF-ResNetV2-50 (ws, relu, alpha=0.2)") == "nf-resnetv2-50-ws-relu-alpha-0.2"
    assert (
        file_stem(["NF-ResNetV2-50 (ws, relu, alpha=0.2)"])
        == "spp-nf-resnetv2-50-ws-relu-alpha-0.2"
    )
    assert file_stem(["a", "b", "c"], preset="fig2") == "spp-fig2-3-runs"
