"""Offline balancing (uniopd_mm/offline_balance.py, scripts/offline_balance.py) on the tiny student: never drops a prompt, upsamples medium buckets,
writes the report, and resumes from its passes file."""

from __future__ import annotations

import json

from conftest import tiny_config

from uniopd_mm import offline_balance


def test_offline_balance_end_to_end_and_resume(tiny_dir, synth_dir, tmp_path):
    import yaml
    from dataclasses import asdict

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(asdict(tiny_config(tiny_dir, synth_dir, tmp_path / "run"))))
    data = tmp_path / "in.jsonl"
    lines = [json.loads(x) for x in (synth_dir / "train.jsonl").read_text().splitlines()[:12]]
    for rec in lines:  # media paths absolute, since the file moved
        for m in rec["messages"]:
            for p in m["content"]:
                for k in ("image", "video"):
                    if k in p:
                        p[k] = str(synth_dir / p[k])
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "out" / "train.jsonl"
    # a previous, interrupted run scored the first three prompts; the third could not be verified at all
    out.parent.mkdir()
    out.with_suffix(".passes.jsonl").write_text(
        json.dumps({"id": lines[0]["id"], "passes": 2, "unknown": 0, "n": 4}) + "\n" +
        json.dumps({"id": lines[1]["id"], "passes": 1, "unknown": 0, "n": 4}) + "\n" +
        json.dumps({"id": lines[2]["id"], "passes": 0, "unknown": 4, "n": 4}) + "\n")
    report = offline_balance.main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--n", "4",
                                   "--max-factor", "3"])
    passes = [json.loads(x) for x in out.with_suffix(".passes.jsonl").read_text().splitlines()]
    assert len(passes) == 12 and passes[0]["passes"] == 2  # resumed: the first two were not re-scored
    # the unverifiable prompt is not counted as hard (RECIPE 3a buckets by correct rollouts)
    unverifiable = sum(p["unknown"] > 0 for p in passes)
    assert unverifiable >= 1 and report["unverifiable_prompts"] == unverifiable
    assert sum(report["histogram_before"]) == 12 - unverifiable and report["histogram_before"][2] >= 1
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == report["records_out"] == sum(report["histogram_after"]) + unverifiable
    third = [r for r in records if r["id"].split("#dup")[0] == lines[2]["id"]]
    assert len(third) == 1 and third[0]["meta"]["pass_count"] is None and third[0]["meta"]["offline_factor"] == 1
    base_ids = {r["id"].split("#dup")[0] for r in records}
    assert base_ids == {r["id"] for r in lines}  # no prompt dropped
    assert len({r["id"] for r in records}) == len(records)  # copies get unique ids
    for r in records:
        k = r["meta"]["pass_count"]
        assert r["meta"]["offline_factor"] == (report["factors"][k] if k is not None else 1)
    assert report["factors"][0] == 1 and report["factors"][4] == 1
    assert out.with_suffix(".report.png").stat().st_size > 1000
    # a rerun with everything scored needs no model at all
    again = offline_balance.main(["--config", str(cfg), "--data", str(data), "--out", str(out), "--n", "4",
                                  "--max-factor", "3", "student.path=/nonexistent"])
    assert again["histogram_before"] == report["histogram_before"]
    # the balanced file loads as training data
    from uniopd_mm.data import load_jsonl

    assert len(load_jsonl(out, strict=True)) == len(records)
