"""Online RL from rewards: PPO and GRPO with LoRA.

Modules and what they own:

* :mod:`~alignment.rl.advantages` -- GAE, whitening, group advantages (GRPO, Dr. GRPO, RLOO);
* :mod:`~alignment.rl.losses` -- the clipped surrogate, the clipped value loss, loss aggregation;
* :mod:`~alignment.rl.kl` -- KL estimators (k1, k3) and the adaptive KL controller.

Each function is small and pure (tensors in, tensors out) and cites the equation it implements.
"""
