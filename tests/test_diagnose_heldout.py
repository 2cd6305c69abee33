"""scripts/diagnose_heldout.py: the overfit diagnostic end to end at tiny size, the position questions, the capacity
probe and the counting-error kinds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import ablate  # noqa: E402
import diagnose_heldout  # noqa: E402


def test_overfit_runs_every_objective(tiny_dir, tmp_path):
    """On a tiny held-out ablation setup: every objective trains on the same first prompts (also its test set),
    the OPD rows with the divergence they name and the log-ratio mask off unless named; the table has every row."""
    abl = tmp_path / "ablate"
    ablate.main(["--out", str(abl), "--tiny", str(tiny_dir), "--budget", "0.5", "--eval-every", "50", "--held-out",
                 "--teacher-steps", "2", "--student-steps", "2", "--n-train", "24", "--n-test", "6", "--rows", "opd"])
    results = diagnose_heldout.main(["overfit", "--ablation", str(abl), "--prompts", "4", "--steps", "2"])
    assert list(results) == list(diagnose_heldout.OBJECTIVES)
    out = tmp_path / "ablate_overfit"
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 4
    # SFT's target is each record's ground-truth solution (sft.target defaults to meta.solution)
    first = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert all(r["meta"]["solution"] and r["messages"][-1]["role"] == "user" for r in first)
    assert (out / ablate.slug("sft on the solutions") / "final").exists()
    algo = {name: json.loads((out / ablate.slug(name) / "config.json").read_text())["algo"]
            for name in diagnose_heldout.OBJECTIVES if diagnose_heldout.OBJECTIVES[name] is not None}
    assert algo["opd full forward KL"]["loss"] == "forward_kl" and algo["opd full forward KL"]["distill_support"] == "full"
    assert algo["opd"]["logratio_threshold"] is None and algo["opd (log-ratio mask 10)"]["logratio_threshold"] == 10.0
    for r in results.values():
        assert r["eval"][-1][0] == 2  # evaluated at the last step
    table = (out / "report.md").read_text()
    assert all(f"| {name} |" in table for name in diagnose_heldout.OBJECTIVES)


def test_where_records_ask_for_the_named_shapes_cell(tmp_path):
    """A colour question about the circle becomes a question about its row and column (by hand)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    rec = {"id": "a", "domain": "shapes-color", "answer": "red",
           "messages": [{"role": "user", "content": [{"type": "image", "image": "images/a.png"},
                                                     {"type": "text", "text": "What color is the circle?"}]}],
           "meta": {"difficulty": 1, "solution": "circle: red, so red",
                    "scene": {"grid": 3, "objects": [{"shape": "square", "color": "blue", "row": 1, "col": 1},
                                                     {"shape": "circle", "color": "red", "row": 3, "col": 2}]}}}
    for split in ("train", "test"):
        (src / f"{split}.jsonl").write_text(json.dumps(rec) + "\n")
    diagnose_heldout.where_records(src, dst)
    got = json.loads((dst / "test.jsonl").read_text())
    assert got["messages"][0]["content"][1]["text"] == "What row and column is the circle in?"
    assert got["answer"] == "3-2" and got["meta"]["solution"] == "circle: row 3 column 2, so 3-2"
    from uniopd_mm.synthetic import check_answer

    assert check_answer(got["meta"]["solution"], got["answer"]) is True


def test_vision_trains_the_tower_in_one_arm_and_freezes_it_in_the_other(tiny_dir, tmp_path):
    """The vision diagnostic at tiny size: one SFT with the teacher's vision tower trained, one with it frozen
    (its weights equal the untrained preset's after the run, the other arm's do not), motion answers stating the
    direction, and a table row per arm."""
    from safetensors.torch import load_file

    out = tmp_path / "vision"
    results = diagnose_heldout.main(["vision", "--out", str(out), "--tiny", str(tiny_dir), "--steps", "2",
                                     "--domains", "motion", "--lr", "1e-2"])
    assert list(results) == ["motion, vision x1", "motion, vision x0"]
    rec = json.loads((out / "data_motion" / "train.jsonl").read_text().splitlines()[0])
    assert " row " not in rec["meta"]["solution"] and rec["meta"]["solution"].endswith(f"so {rec['answer']}")
    before = load_file(str(tiny_dir / "qwen2_vl-teacher" / "model.safetensors"))
    vision_keys = [k for k in before if "visual" in k]
    assert vision_keys
    for scale, same in (("1", False), ("0", True)):
        after = load_file(str(out / f"sft_motion_vision{scale}" / "final" / "model.safetensors"))
        unchanged = all(torch.equal(before[k], after[k]) for k in vision_keys)
        assert unchanged is same, scale
    table = (out / "report.md").read_text()
    assert "| motion, vision x1 |" in table and "| motion, vision x0 |" in table


def test_count_error_kinds_by_hand():
    truth_two, truth_none = "red: circle square, so 2", "red: none, so 0"
    assert diagnose_heldout.count_error_kind("red: square circle, so 2", truth_two) is None  # the count is what counts
    assert diagnose_heldout.count_error_kind("red: none, so 0", truth_two) == "none, shapes present"
    assert diagnose_heldout.count_error_kind("red: circle, so 1", truth_two) == "too few"
    assert diagnose_heldout.count_error_kind("red: circle square triangle, so 3", truth_two) == "too many"
    assert diagnose_heldout.count_error_kind("red: triangle, so 1", truth_none) == "a shape, none present"
    assert diagnose_heldout.count_error_kind("two", truth_two) == "unparsed"


def test_capacity_and_count_errors_on_a_tiny_main_job(tiny_dir, tmp_path):
    """capacity fine-tunes the student preset on every training record of a make-run folder and logs per-domain
    accuracy; count-errors sorts each wrong counting answer of that model into one kind."""
    from uniopd_mm.synthetic import SyntheticSpec, generate

    main = tmp_path / "main"
    generate(SyntheticSpec(n_train=8, n_test=6, domains=("shapes-count", "motion"), levels=(1,),
                           motion_solution="direction"), main / "data")
    res = diagnose_heldout.main(["capacity", "--main", str(main), "--tiny", str(tiny_dir), "--steps", "5"])
    assert [row["step"] for row in res["curve"]] == [1, 2, 3, 4, 5]
    assert {"shapes-count", "motion", "accuracy"} <= set(res["curve"][-1])
    counts = diagnose_heldout.main(["count-errors", "--model", str(tmp_path / "main_capacity" / "final"),
                                    "--data", str(main / "data")])
    n_count = sum(json.loads(line)["domain"] == "shapes-count" for line in open(main / "data" / "test.jsonl"))
    assert counts["questions"] == n_count > 0
    assert sum(counts["kinds"].values()) == counts["errors"] == sum(r["kind"] is not None for r in counts["records"])
    # where the answer parses, a kind is given exactly where the verifier says wrong
    assert all((r["kind"] is None) == (r["correct"] is True) for r in counts["records"] if r["kind"] != "unparsed")
