"""lmms-eval 0.7.3's verdicts on the parity cases, computed in their own interpreter: importing lmms-eval changes
process-wide state (``lmms_eval/api/task.py`` sets PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES = True``, after which a
truncated image no longer fails to decode), so it never runs inside the test process.

    PYTHONPATH=<venv>/lmms-eval-0.7.3 python tests/eval/lmms_eval_verdicts.py < cases.json   # prints verdicts
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from lmms_eval.api import metrics
    from lmms_eval.tasks.ai2d import utils as ai2d
    from lmms_eval.tasks.chartqa import utils as chartqa

    cases = json.load(sys.stdin)
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
