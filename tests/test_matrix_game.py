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
from helpers import load_script

PAYOFF = [[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]]
CROSSED = ([0.0, 2.0, 0.0], [2.0, 0.0, 0.0])


def matrix_game_ppo(surrogate, payoff, init_logits, sequential, iterations, epochs=5, lr=0.3, seed=0):
    """Two tabular softmax agents trained on a one-step matrix game with a script's `surrogate(logratio,
    advantages, mask, agent) -> loss`, where the expectation over joint actions is exact (no sampling).

    Simultaneous: both agents step on one loss. Sequential: agents step one after the other in a random
    order, the second one seeing the first one's new ratio through the surrogate. Returns the final
    expected payoff and the two policies.
    """
    torch.manual_seed(seed)
    payoff = torch.as_tensor(payoff, dtype=torch.float32)
    k = payoff.shape[0]
    logits = [torch.tensor(init_logits[i], dtype=torch.float32, requires_grad=True) for i in range(2)]
    optims = [torch.optim.Adam([p], lr=lr) for p in logits]
    a1, a2 = (x.flatten() for x in torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij"))
    rewards = payoff.flatten()
    for _ in range(iterations):
        with torch.no_grad():
            old = [torch.log_softmax(p, 0) for p in logits]
            prob = (old[0][a1] + old[1][a2]).exp()  # pi_old(a1) * pi_old(a2) over the k*k joint actions
            adv = rewards - (prob * rewards).sum()
            adv = adv / ((prob * adv**2).sum().sqrt() + 1e-8)

        def loss(agents, position, old=old, prob=prob, adv=adv):
            new = [torch.log_softmax(p, 0) for p in logits]
            logratio = torch.stack([new[0][a1] - old[0][a1], new[1][a2] - old[1][a2]], -1).view(1, k * k, 2)
            mask = torch.zeros(1, k * k, 2)
            mask[..., agents] = 1.0
            mask = mask * prob.view(1, k * k, 1) * k * k  # the masked mean becomes an expectation
            return surrogate(logratio, adv.view(1, k * k, 1).expand(1, k * k, 2), mask, position)

        if sequential:
            for position, agent in enumerate(torch.randperm(2).tolist(), start=1):
                for _ in range(epochs):
                    optims[agent].zero_grad()
                    loss([agent], {"agent": agent, "position": position}).backward()
                    optims[agent].step()
        else:
            for _ in range(epochs):
                for o in optims:
                    o.zero_grad()
                loss([0, 1], None).backward()
                for o in optims:
                    o.step()
    with torch.no_grad():
        pi = [torch.softmax(p, 0) for p in logits]
        return float((pi[0][a1] * pi[1][a2] * rewards).sum()), pi


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
