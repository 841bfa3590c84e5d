"""Check that replaying every task's gold actions through the runner's tool path scores 1.0,
and that empty episodes score what docs/rollout.md says (1.0 exactly on the trivial tasks).
With ``--compare_tau2``, also that the scorer (cached gold hashes, no environment rebuilt
from disk) gives every gold and empty episode tau2's own ``evaluate_simulation`` reward and
database check.

The gold actions become ``<tool_call>`` turns of a scripted policy, so parsing,
``env.get_response``, trajectory building and tau2's evaluators are the production code.
Prints one summary line per domain and check, and exits 1 on any mismatch.

    python scripts/check_gold_replay.py                      # airline + retail, all tasks
    python scripts/check_gold_replay.py --domains telecom --split train --skills
    python scripts/check_gold_replay.py --skills --compare_tau2 \
        --domains airline retail telecom airline_v2 retail_v2 telecom_v2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tau2.continual_learning import load_tokenizer
from tau2.continual_learning.rollout import load_tasks
from tau2.continual_learning.rollout.scoring import Scorer
from tau2.continual_learning.rollout.scripted import replay_gold
from tau2.continual_learning.rollout.tau2_reference import differences_from_tau2

logger = logging.getLogger("check_gold_replay")


def check_gold(tokenizer, tasks: list, workers: int, compare_tau2: bool) -> list[str]:
    episodes = replay_gold(tasks, tokenizer, scoring_workers=workers)
    failures = [
        f"{e.key}: {e.reward} ({e.termination_reason})" for e in episodes if e.reward != 1.0
    ]
    if compare_tau2:
        failures += [
            f"{t.key}: {difference}"
            for t, e in zip(tasks, episodes, strict=True)
            for difference in _tau2_differences(t, e.messages, e.termination_reason)
        ]
    return failures


def _tau2_differences(task, messages: list, termination_reason: str) -> list[str]:
    return differences_from_tau2(
        task.environment_domain, task.task, messages, termination_reason, task.env_solo_mode
    )


def check_empty_like_tau2(tasks: list) -> list[str]:
    return [
        f"{t.key} (empty): {difference}"
        for t in tasks
        for difference in _tau2_differences(t, [], "agent_stop" if t.solo else "user_stop")
    ]


def check_empty(tasks: list, workers: int) -> list[str]:
    with Scorer(workers) as scorer:
        futures = [
            scorer.submit(
                t.environment_domain,
                t.task,
                [],
                "agent_stop" if t.solo else "user_stop",
                t.env_solo_mode,
            )
            for t in tasks
        ]
        rewards = [f.result()[0] for f in futures]
    return [
        f"{t.key}: empty scores {r}, trivial={t.trivial}"
        for t, r in zip(tasks, rewards, strict=True)
        if (r == 1.0) != t.trivial
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--domains", nargs="+", default=["airline", "retail"])
    parser.add_argument("--split", default="base")
    parser.add_argument(
        "--skills", action="store_true", help="check skill tasks (train + test) instead"
    )
    parser.add_argument("--scoring_workers", type=int, default=1)
    parser.add_argument(
        "--compare_tau2",
        action="store_true",
        help="also hold every gold and empty episode's score to tau2's evaluate_simulation",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tokenizer = load_tokenizer()
    ok = True
    for domain in args.domains:
        if args.skills:
            tasks = load_tasks(domain, "train", "skills") + load_tasks(domain, "test", "skills")
        else:
            tasks = load_tasks(domain, args.split)
        checks = [
            ("gold replay", check_gold(tokenizer, tasks, args.scoring_workers, args.compare_tau2)),
            ("empty episode", check_empty(tasks, args.scoring_workers)),
        ]
        if args.compare_tau2:
            checks.append(("empty episode like tau2", check_empty_like_tau2(tasks)))
        for check, failures in checks:
            ok &= not failures
            logger.info(
                "%s %s: %d/%d as expected", domain, check, len(tasks) - len(failures), len(tasks)
            )
            for failure in failures:
                logger.info("  MISMATCH %s", failure)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
