"""CLEAR for GRPO: replay plus behaviour cloning towards stored trajectories."""

from __future__ import annotations

from typing import Any

from tau2.continual_learning.cl_algorithm import GRPO_ALGORITHMS
from tau2.continual_learning.grpo.algorithms.parameters import check
from tau2.continual_learning.grpo.algorithms.replay import ReplayCL
from tau2.continual_learning.grpo.token_batch import right_padded
from tau2.continual_learning.rollout.prompt import pad_token_id


@GRPO_ALGORITHMS.register("clear")
class CLEARCL(ReplayCL):
    """CLEAR for GRPO (Rolnick et al. 2019): replay plus behaviour cloning on stored trajectories.

    Besides replaying earlier tasks like :class:`ReplayCL`, every optimisation step samples
    ``bc_batch_size`` stored trajectories of earlier domains, with the token ids and sampling
    log-probs recorded when they were generated (the behaviour policy), and adds
    ``bc_weight * KL(behaviour || current)`` over their model-written tokens to TRL's loss. The
    KL uses the non-negative per-token estimator ``exp(d) - d - 1`` with ``d = log pi - log b``,
    whose gradient pulls the current policy back towards what it did on earlier domains.
    """

    def __init__(
        self,
        replay_ratio: float = 0.25,
        replay_strategy: str = "random",
        min_buffer_size: int = 8,
        replay_all_domains: bool = True,
        bc_weight: float = 0.1,
        bc_batch_size: int = 2,
    ) -> None:
        super().__init__(replay_ratio, replay_strategy, min_buffer_size, replay_all_domains)
        check(bc_weight=bc_weight, bc_batch_size=bc_batch_size)
        self.bc_weight = float(bc_weight)
        self.bc_batch_size = int(bc_batch_size)
        self.bc_steps = 0
        self.last_bc_loss: float | None = None

    def extra_loss(self, model: Any, batch: Any, current_domain: str) -> Any | None:
        if self._trainer is None or self.bc_weight == 0:
            return None
        previous = self.previous_domains(current_domain)
        records = [
            r
            for r in self._trainer.trajectory_buffer.sample(
                previous, self.bc_batch_size, self.replay_strategy
            )
            if r.completion_ids and any(r.env_mask)
        ]
        if not records:
            return None
        pad_id = pad_token_id(self._trainer.tokenizer)
        loss = self.bc_weight * behaviour_kl(model, records, pad_id)
        self.bc_steps += 1
        self.last_bc_loss = float(loss.detach())
        return loss

    def get_statistics(self) -> dict[str, Any]:
        stats = super().get_statistics()
        stats.update(
            {
                "bc_weight": self.bc_weight,
                "bc_steps": self.bc_steps,
                "last_bc_loss": self.last_bc_loss,
            }
        )
        return stats


def behaviour_kl(model: Any, records: list[Any], pad_id: int) -> Any:
    """Mean per-token ``KL(behaviour || model)`` estimate over the model-written tokens of
    stored trajectories (right-padded into one batch)."""
    import torch

    device = next(model.parameters()).device
    batch = right_padded(records, pad_id, logprobs=True)
    input_ids = batch.input_ids.to(device)
    logits = model(input_ids=input_ids, attention_mask=batch.attention_mask.to(device)).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    logp = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    delta = logp - batch.logprobs[:, 1:].to(device)
    per_token = torch.exp(delta) - delta - 1.0
    token_mask = batch.model_written[:, 1:].to(device, torch.float32)
    return (per_token * token_mask).sum() / token_mask.sum().clamp(min=1.0)
