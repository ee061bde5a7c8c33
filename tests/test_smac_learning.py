"""Each SMAC algorithm learns SMAX 3m (3 marines vs 3) within a fixed env-step budget.

Random play wins 0% of 3m. Budget chosen from measurements on the project's 2-core machine (see
the closing notes of issues 2 and 3); 128k steps take 35-90 s per algorithm here. Every evaluation
plays the same 128 seeded games (an estimate within about +-0.04), on which seed 1 reaches, at 35k /
128k env steps: MAPPO 0.48 / 0.64, CoPPO 0.50 / 0.57, HAPPO 0.48 / 0.65, A2PO 0.48 / 0.67. The
threshold fails any run that has not learned to focus fire.

QMIX learns from replay, so it gets its own budget and ratio: one gradient step per finished episode
(`--train-steps-per-rollout 8` with 8 envs, pymarl's episode-runner ratio). Measured here: greedy win rate
0.72, 0.75, 0.84 at 100k env steps (seeds 1-3; 0.63-0.75 at 80k), about 3.5 min per run on the busy 2-core
machine. With the default one step per 8 episodes it passes 0.5 only near 200k steps (seed 1).
"""

import json

import pytest
from helpers import ROOT, only_run_dir, run_script

SCRIPTS = [s for s in ("mappo_smac", "coppo_smac", "happo_smac", "a2po_smac") if (ROOT / f"{s}.py").exists()]
BUDGET = 128_000
THRESHOLD = 0.5


@pytest.mark.parametrize("script", SCRIPTS)
def test_learns_smax_3m(script, tmp_path):
    run_script(
        script,
        "--map-name",
        "3m",
        "--seed",
        "1",
        "--total-timesteps",
        BUDGET,
        "--eval-interval",
        10**9,
        "--eval-episodes",
        128,
        cwd=tmp_path,
        timeout=420,
    )
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["global_step"] == BUDGET
    assert summary["final_eval"]["win_rate"] >= THRESHOLD, summary["final_eval"]


QMIX_BUDGET = 100_000


def test_qmix_learns_smax_3m(tmp_path):
    run_script(
        "qmix_smac",
        "--map-name",
        "3m",
        "--seed",
        "1",
        "--total-timesteps",
        QMIX_BUDGET,
        "--train-steps-per-rollout",
        8,
        "--eval-interval",
        10**9,
        "--eval-episodes",
        32,
        cwd=tmp_path,
        timeout=600,
        env={"OMP_NUM_THREADS": "1"},
    )  # 64-hidden GRU steps on 32 episodes: a second thread only contends
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["global_step"] == QMIX_BUDGET
    assert summary["final_eval"]["win_rate"] >= THRESHOLD, summary["final_eval"]
