"""One search worker (run by test_search): joins the study in STORAGE and logs the trials it evaluates."""

import sys
import time

from nas.search import Objective, SearchConfig, run_search
from search_spaces import load_space

storage, name, log, strategy = sys.argv[1:5]
pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0  # seconds an evaluation takes
space = load_space("nasbench201")


def evaluate(arch):
    flops = space.flops(arch)
    time.sleep(pause)
    return 1.0 - 1.0 / (1.0 + flops / 2e7), flops / 1e7


def record(number, arch, acc, lat):
    with open(log, "a") as f:
        f.write(f"{number}\t{space.to_str(arch)}\n")


run_search(
    space,
    evaluate,
    Objective("pareto"),
    SearchConfig(strategy=strategy, trials=40, population=8, study_name=name, seed=0),
    storage,
    on_trial=record,
)
