"""Learning signal for weak policies inside one GRPO step: dynamic sampling and guided groups.

A GRPO group whose rewards are all equal has zero advantage, so TRL's loss gives it no gradient;
a weak policy (a small model, a hard domain) produces almost only such groups.

* **Dynamic sampling** (DAPO, arXiv 2503.14476): zero-variance groups of the step's new tasks
  are replaced by fresh groups of other train tasks of the domain, rolled out and checked in
  turn, within ``dynamic_sampling_max_extra_groups`` extra groups per step; groups still
  uninformative when the budget is spent stay (TRL needs the step's batch size). Replayed groups
  are kept as they are, so the replay share does not change.
* **Guided groups** (LUFFY arXiv 2504.14945, RLEP arXiv 2507.07451): in a group where every
  member failed, the last member is replaced by a known success of the same task: a stored
  success from the trajectory buffer, else the task's gold demonstration. It is scored and
  masked like the others (only model-written tokens are trained), and it is **off-policy**: its
  tokens were not sampled from the current policy, so the policy-gradient estimate is biased
  toward imitation, which is the point for a policy that never succeeds on its own.

Both work on *groups*: lists of ``num_samples_per_prompt`` consecutive episodes of one task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Group = list[Any]
"""Episodes (or stored trajectories) of one task: each has ``reward`` and the token fields
``prompt_ids``, ``completion_ids``, ``logprobs``, ``env_mask``."""


def groups_of(episodes: Sequence[Any], size: int) -> list[Group]:
    """Consecutive episodes cut into groups of ``size`` (the rollout order: each task's
    ``num_samples_per_prompt`` episodes follow each other)."""
    return [list(episodes[i : i + size]) for i in range(0, len(episodes), size)]


def is_informative(group: Sequence[Any]) -> bool:
    """Rewards not all equal: the group has a non-zero advantage somewhere."""
    return len({float(e.reward) for e in group}) > 1


@dataclass
class RefillResult:
    groups: list[Group]
    extra_groups: int
    """Groups rolled out on top of the step's own (the budget used)."""
    replaced: int
    """Zero-variance groups replaced by informative ones."""


def refill_uninformative(
    groups: list[Group],
    replaceable: Sequence[bool],
    sample_groups: Callable[[int], list[Group]],
    budget: int,
) -> RefillResult:
    """Replace the zero-variance groups whose ``replaceable`` flag is set by informative fresh
    groups from ``sample_groups(n)`` (which rolls out ``n`` new groups; it may return fewer when
    the domain has no more tasks), drawing at most ``budget`` extra groups in all. The result
    has as many groups as ``groups``, in the same slots."""
    out = list(groups)
    targets = [i for i, g in enumerate(groups) if replaceable[i] and not is_informative(g)]
    used = replaced = 0
    while targets and used < budget:
        fresh = sample_groups(min(len(targets), budget - used))
        if not fresh:
            break
        used += len(fresh)
        for group in fresh:
            if is_informative(group) and targets:
                out[targets.pop(0)] = group
                replaced += 1
    return RefillResult(out, used, replaced)


def guide_failed_groups(
    groups: list[Group], find_success: Callable[[Group], Any | None]
) -> tuple[list[Group], int]:
    """In every group whose members all have reward 0, replace the last member by
    ``find_success(group)`` when it returns one (a success of the same task). Group sizes are
    kept; other groups are untouched. Returns the groups and how many were guided."""
    out: list[Group] = []
    guided = 0
    for group in groups:
        if group and all(float(e.reward) == 0.0 for e in group):
            success = find_success(group)
            if success is not None:
                group = [*group[:-1], success]
                guided += 1
        out.append(group)
    return out, guided
