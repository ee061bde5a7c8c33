"""Sequential vs simultaneous updates on a tiny cooperative matrix game, with the scripts' own surrogates.

The game pays 10 when both agents pick action 0 or both pick action 1, else 0. The agents start
"crossed": agent 0 leans to action 1 and agent 1 to action 0. A simultaneous update makes each
agent best-respond to the other's OLD policy, so they swap and keep missing each other (the
non-stationarity of the talk); a sequential update lets the second agent see the first agent's new
policy through the ratio product, and they coordinate. The expectation over joint actions is exact,
so the test is deterministic.
"""

import pytest
import torch
from helpers import load_script, matrix_game_ppo

PAYOFF = [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]]
CROSSED = ([0.0, 2.0, 0.0], [2.0, 0.0, 0.0])


def surrogate(name):
    m = load_script(name)
    if name == "mappo_smac":
        return lambda lr, adv, mask, pos: m.surrogate_loss(lr, adv, mask, 0.2)[0]
    if name == "coppo_smac":
        return lambda lr, adv, mask, pos: m.surrogate_loss(lr, adv, mask, 0.2, 0.1)[0]
    if name == "happo_smac":
        return lambda lr, adv, mask, pos: m.surrogate_loss(lr, adv, mask, 0.2)[0]

    def a2po(lr, adv, mask, pos):  # eps_i = C(eps, k) for the agent being updated
        eps = torch.full((2,), m.adaptive_clip(0.2, pos["position"], 2, 0.5))
        return m.surrogate_loss(lr, adv, mask, eps)[0]

    return a2po


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["happo_smac", "a2po_smac"])
def test_sequential_updates_coordinate_from_a_crossed_start(name, seed):
    value, pi = matrix_game_ppo(surrogate(name), PAYOFF, CROSSED, sequential=True, iterations=30, seed=seed)
    assert value > 9.5, (value, pi)


@pytest.mark.parametrize("name", ["mappo_smac", "coppo_smac"])
def test_simultaneous_updates_keep_missing_each_other(name):
    value, pi = matrix_game_ppo(surrogate(name), PAYOFF, CROSSED, sequential=False, iterations=30)
    assert value < 5.0, (value, pi)
    assert pi[0].argmax() != pi[1].argmax(), "still crossed after 30 updates"
