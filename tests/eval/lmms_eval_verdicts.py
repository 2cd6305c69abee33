"""lmms-eval 0.7.3's verdicts on the parity cases, computed in their own interpreter: importing lmms-eval changes
process-wide state (``lmms_eval/api/task.py`` sets PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES = True``, after which a
truncated image no longer fails to decode), so it never runs inside the test process.

    PYTHONPATH=<venv>/lmms-eval-0.7.3 python tests/eval/lmms_eval_verdicts.py [documents|reasoning|mathvision] < cases.json

``mathvision`` also needs MATH-V's latex2sympy2 1.9.1 (with its antlr4 4.7.2 runtime, which math-verify's parser
cannot share an interpreter with) on PYTHONPATH. Two imports are stood in for, and neither takes part in a
verdict: ``openai`` (``reasoning_utils`` builds a client at import; its LLM judge is off by default) and
``huggingface_hub.snapshot_download`` (VisuLogic's task module fetches its images at import).
"""

from __future__ import annotations

import json
import sys


def documents(cases: dict) -> dict:
    from lmms_eval.api import metrics
    from lmms_eval.tasks.ai2d import utils as ai2d
    from lmms_eval.tasks.chartqa import utils as chartqa

    out = {"chartqa": [chartqa.chartqa_process_results({"type": "human_test", "answer": target}, [pred])["relaxed_overall"]
                       for target, pred in cases["chartqa"]],
           "anls": [metrics.anls(answers, [pred])["anls"] for answers, pred in cases["anls"]]}
    f = ai2d.MultiChoiceRegexFilter(group_select=0, ignore_case=True, ignore_punctuation=True, regex_pattern=r"([A-Z])\.")
    verdicts = []
    for gold, pred in cases["ai2d"]:
        doc = {"options": ["a", "b", "c", "d"], "answer": "ABCD".index(gold)}
        verdicts.append(float(metrics.exact_match_hf_evaluate([f.apply([[pred]], [doc])[0]], [ai2d.ai2d_doc_to_target(doc, "mcq")],
                                                              ignore_case=True, ignore_punctuation=True)["exact_match"]))
    out["ai2d"] = verdicts
    return out


def reasoning(cases: dict) -> dict:
    import types

    import huggingface_hub

    sys.modules["openai"] = types.SimpleNamespace(OpenAI=lambda **kwargs: None)
    huggingface_hub.snapshot_download = lambda **kwargs: "/nonexistent"
    from lmms_eval.tasks._task_utils.reasoning_utils import compute_score
    from lmms_eval.tasks.dynamath.reasoning import utils as dynamath
    from lmms_eval.tasks.visulogic import utils as visulogic
    from lmms_eval.tasks.wemath.reasoning import utils as wemath

    rows = [{"ID": pid, "key": key, "acc_score": score} for pid, key, score in cases["wemath"]]
    dyn = [{"acc": score, "variant_id": group, "question_id": i} for i, (group, score) in enumerate(cases["dynamath"])]
    return {"reasoning": [compute_score("x", pred.strip(), gold)["acc_score"] for gold, pred in cases["reasoning"]],
            "visulogic": [visulogic.visulogic_process_results({"label": gold}, [pred])["visulogic_acc"]
                          for gold, pred in cases["visulogic"]],
            "wemath": {"loose": wemath.wemath_aggregate_results_loose(rows), "strict": wemath.wemath_aggregate_results_strict(rows)},
            "dynamath": {"average": dynamath.dynamath_aggregate_results_average(dyn),
                         "worst": dynamath.dynamath_aggregate_results_worst(dyn)}}


def mathvision(cases: dict) -> dict:
    from lmms_eval.tasks.mathvision import utils

    return {"mathvision": [float(utils.mathvision_process_results({"answer": gold, "options": options}, [pred])
                                 ["mathvision_standard_eval"]["scores"][0]) for gold, options, pred in cases["mathvision"]]}


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "documents"
    print(json.dumps({"documents": documents, "reasoning": reasoning, "mathvision": mathvision}[mode](json.load(sys.stdin))))
