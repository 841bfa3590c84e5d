"""Skill tasks: compact tau2 tasks generated from each real domain's database and tools.

Three kinds, all solo (no user; the agent calls ``done`` when finished):

* ``lookup``: one read call (``reward_basis = [ACTION]``);
* ``write``: one write call that the domain policy allows (``[DB, ACTION]``);
* ``two_step``: a lookup whose result names the argument of a write (``[DB, ACTION]``).

Half of the tickets (``HINT_FRACTION``) end by naming the tools to use ("Use
get_order_details."): an easier rung of the curriculum, on which the embedded 135M model
succeeds often enough for GRPO groups to have signal.

Each is a real tau2 ``Task`` (``ticket``, ``evaluation_criteria`` with gold ``actions``) scored
by tau2's evaluators on a real environment. The agent sees only the needed tools plus a few
distractors, described briefly, and a short ticket: prompts stay under 600 tokens with the
SmolLM2 tokenizer. Generation is deterministic from the seed; train and test are disjoint
(split per template), and no test task has the gold actions of a train task, whatever their
templates (:func:`gold_signature`: a customer's phone number can also be a line's, so two
lookup templates can make the same call). Everything is cached per process.

The API-migration variants (``airline_v2``, ...) have the same tasks and splits as their base
domain, but hints, the worked example and the tool list use the v2 API
(:mod:`~tau2.continual_learning.rollout.tasks.api_migration`).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tau2.data_model.tasks import Action, EvaluationCriteria, RewardType, Task, UserScenario

from tau2.continual_learning.rollout.domain_task import VARIANT_DOMAINS, DomainTask, base_domain
from tau2.continual_learning.rollout.environments import agent_tool_schemas, environment_constructor
from tau2.continual_learning.rollout.tasks.api_migration import variant_api
from tau2.continual_learning.rollout.tool_format import DONE_TOOL, format_call, render_signatures

logger = logging.getLogger(__name__)

SKILL_DOMAINS: tuple[str, ...] = ("airline", "retail", "telecom", *VARIANT_DOMAINS)
"""The three domains whose databases give skill tasks, and their API-migration variants."""
SKILL_SPLITS = ("train", "test")
TEST_TASKS_PER_DOMAIN = 32
"""Held-out tasks per domain, spread round-robin over the templates (template-balanced): one
task moves a score by 0.031, so a change of 0.40 is far outside the noise of one task, while
scoring every domain after every domain (the accuracy matrix) stays affordable on a CPU."""
SKILL_TOOL_RESPONSE_CHARS = 300
"""Tool responses of skill episodes are shown to the model cut to this many characters (head and
tail). Skill tasks need only the head (the record's identity) and the tail (a user's
reservations or orders, for two-step tasks); whole responses would be most of an episode's
tokens (a product's variants run to thousands of characters), which evaluation, the warm start
and the GRPO update all pay for on a CPU (figures in docs/results.md, "Warm start settings")."""
MAX_PER_TEMPLATE = 60
NUM_DISTRACTORS = 2
HINT_FRACTION = 0.5
"""Share of skill tasks whose ticket names the tools to use (an easier variant)."""
AIRLINE_NOW = "2024-05-15"
"""tau2's airline domain runs at a fixed 'now' (2024-05-15 15:00 EST)."""

DISTRACTORS: dict[str, tuple[str, ...]] = {
    # Tools with short schemas, so that distractors keep the prompt small.
    "airline": (
        "get_user_details",
        "get_reservation_details",
        "get_flight_status",
        "search_direct_flight",
        "cancel_reservation",
        "list_all_airports",
        "calculate",
    ),
    "retail": (
        "find_user_id_by_email",
        "find_user_id_by_name_zip",
        "get_order_details",
        "get_product_details",
        "get_user_details",
        "cancel_pending_order",
        "list_all_product_types",
        "calculate",
    ),
    "telecom": (
        "get_customer_by_phone",
        "get_customer_by_id",
        "get_details_by_id",
        "get_data_usage",
        "get_bills_for_customer",
        "enable_roaming",
        "disable_roaming",
        "resume_line",
    ),
}


SKILL_INSTRUCTION = (
    "You are a customer service agent. Resolve the ticket by calling tools, one tool call per "
    "turn. Use the exact tool names and the values given in the ticket. When the ticket is "
    "resolved, call done."
)
EXAMPLES: dict[str, tuple[str, str, dict[str, str]]] = {
    # A worked example per domain, in the prompt of every skill task of that domain.
    "airline": (
        "Show me the details of reservation ZFA04Y.",
        "get_reservation_details",
        {"reservation_id": "ZFA04Y"},
    ),
    "retail": (
        "What is the status of my order #W2378156?",
        "get_order_details",
        {"order_id": "#W2378156"},
    ),
    "telecom": ("Show the details of line L1002.", "get_details_by_id", {"id": "L1002"}),
}


def skill_system_prompt(
    domain: str, tool_schemas: list[dict[str, Any]], tool_arguments: bool = True
) -> str:
    """The compact system prompt of skill tasks: instruction, one example, tool signatures
    (``tool_schemas``: tau2's specs, shown in the domain's API). ``tool_arguments=False``
    lists names and tau2's descriptions only: then the tool list of an API-migration variant
    is its base domain's, and only the worked example shows the version's argument format.
    The part that is the same for every task of the domain comes first, so that a batch's
    prompts share it in the policy's prefix cache (encoded once, not once per task)."""
    ticket, name, arguments = EXAMPLES[base_domain(domain)]
    api = variant_api(domain)
    if api is not None:
        name, arguments = api.to_agent(name, arguments)
        if tool_arguments:
            tool_schemas = [api.agent_schema(s) for s in tool_schemas]
    example = (
        f"Example ticket: {ticket}\nExample answer: {format_call(name, arguments)}\n"
        f"Then, after the tool response: {format_call(DONE_TOOL, {})}"
    )
    tools = render_signatures(tool_schemas, arguments=tool_arguments)
    return f"{SKILL_INSTRUCTION}\n\n{example}\n\nTools:\n{tools}"


@dataclass(frozen=True)
class Skill:
    """One generated skill before it becomes a tau2 ``Task``."""

    template: str
    kind: str
    ticket: str
    actions: tuple[tuple[str, dict[str, Any], tuple[str, ...] | None], ...]

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for name, _, _ in self.actions))

    @property
    def task_id(self) -> str:
        values = "-".join(str(v) for _, args, _ in self.actions for v in args.values())
        return f"skill-{self.template}-{values}".replace(" ", "_")


def _lookup(
    template: str,
    ticket: str,
    name: str,
    args: dict[str, Any],
    compare: tuple[str, ...] | None = None,
) -> Skill:
    return Skill(template, "lookup", ticket, ((name, args, compare),))


# -- airline ------------------------------------------------------------------------------
def _airline_skills(db: Any) -> Iterator[Skill]:
    for uid in db.users:
        yield _lookup(
            "airline_user",
            f"I am user {uid}. Please look up my profile.",
            "get_user_details",
            {"user_id": uid},
        )
    for rid in db.reservations:
        yield _lookup(
            "airline_reservation",
            f"Show me the details of reservation {rid}.",
            "get_reservation_details",
            {"reservation_id": rid},
        )
    for fn, flight in db.flights.items():
        for date in sorted(flight.dates)[::7]:
            yield _lookup(
                "airline_status",
                f"What is the status of flight {fn} on {date}?",
                "get_flight_status",
                {"flight_number": fn, "date": date},
            )
    seen_routes = set()
    for flight in db.flights.values():
        route = (flight.origin, flight.destination)
        if route not in seen_routes:
            seen_routes.add(route)
            date = "2024-05-20"
            yield _lookup(
                "airline_search",
                f"Find direct flights from {route[0]} to {route[1]} on {date}.",
                "search_direct_flight",
                {"origin": route[0], "destination": route[1], "date": date},
            )

    def cancellable(reservation: Any) -> bool:
        # Policy: not yet flown, and insured or business class (no reason needed then).
        upcoming = all(f.date > AIRLINE_NOW for f in reservation.flights)
        return (
            reservation.status is None
            and upcoming
            and (reservation.insurance == "yes" or reservation.cabin == "business")
        )

    for rid, reservation in db.reservations.items():
        if cancellable(reservation):
            why = (
                "I bought travel insurance"
                if reservation.insurance == "yes"
                else "it is a business class booking"
            )
            ticket = f"Please cancel reservation {rid}; {why}."
            yield Skill(
                "airline_cancel",
                "write",
                ticket,
                (("cancel_reservation", {"reservation_id": rid}, None),),
            )
    for uid, user in db.users.items():
        active = [r for r in user.reservations if db.reservations[r].status is None]
        if len(active) == 1 and cancellable(db.reservations[active[0]]):
            ticket = f"I am user {uid}. Find my reservation and cancel it; it is insured or business class."
            actions = (
                ("get_user_details", {"user_id": uid}, None),
                ("cancel_reservation", {"reservation_id": active[0]}, None),
            )
            yield Skill("airline_find_cancel", "two_step", ticket, actions)


# -- retail -------------------------------------------------------------------------------
CANCEL_REASONS = ("no longer needed", "ordered by mistake")


def _retail_skills(db: Any) -> Iterator[Skill]:
    for user in db.users.values():
        yield _lookup(
            "retail_email",
            f"My email is {user.email}. What is my user id?",
            "find_user_id_by_email",
            {"email": user.email},
        )
        name, zip_code = user.name, user.address.zip
        yield _lookup(
            "retail_name_zip",
            f"I am {name.first_name} {name.last_name}, zip code {zip_code}. Find my user id.",
            "find_user_id_by_name_zip",
            {"first_name": name.first_name, "last_name": name.last_name, "zip": zip_code},
        )
    for oid in db.orders:
        yield _lookup(
            "retail_order",
            f"What is the status of my order {oid}?",
            "get_order_details",
            {"order_id": oid},
        )
    for pid, product in db.products.items():
        yield _lookup(
            "retail_product",
            f"Show me the options of product {pid} ({product.name}).",
            "get_product_details",
            {"product_id": pid},
        )
    for i, (oid, order) in enumerate(db.orders.items()):
        if order.status == "pending":
            reason = CANCEL_REASONS[i % 2]
            yield Skill(
                "retail_cancel",
                "write",
                f"Cancel my pending order {oid}, reason: {reason}.",
                (("cancel_pending_order", {"order_id": oid, "reason": reason}, None),),
            )
    for i, (uid, user) in enumerate(db.users.items()):
        if len(user.orders) == 1 and db.orders[user.orders[0]].status == "pending":
            reason = CANCEL_REASONS[i % 2]
            ticket = f"I am user {uid}. Look up my only order and cancel it, reason: {reason}."
            actions = (
                ("get_user_details", {"user_id": uid}, None),
                ("cancel_pending_order", {"order_id": user.orders[0], "reason": reason}, None),
            )
            yield Skill("retail_find_cancel", "two_step", ticket, actions)


# -- telecom ------------------------------------------------------------------------------
def _telecom_skills(db: Any) -> Iterator[Skill]:
    lines = {line.line_id: line for line in db.lines}
    for customer in db.customers:
        cid = customer.customer_id
        yield _lookup(
            "telecom_phone",
            f"Find the customer with phone number {customer.phone_number}.",
            "get_customer_by_phone",
            {"phone_number": customer.phone_number},
        )
        yield _lookup(
            "telecom_customer",
            f"Show the account of customer {cid}.",
            "get_customer_by_id",
            {"customer_id": cid},
        )
        yield _lookup(
            "telecom_bills",
            f"List the bills of customer {cid}.",
            "get_bills_for_customer",
            {"customer_id": cid},
            ("customer_id",),
        )
        for lid in customer.line_ids:
            line = lines[lid]
            phone = line.phone_number
            yield _lookup(
                "telecom_line_phone",
                f"Who owns the line with phone number {phone}?",
                "get_customer_by_phone",
                {"phone_number": phone},
            )
            yield _lookup(
                "telecom_usage",
                f"How much data has line {lid} of customer {cid} used?",
                "get_data_usage",
                {"customer_id": cid, "line_id": lid},
            )
            tool = "disable_roaming" if line.roaming_enabled else "enable_roaming"
            verb = "off" if line.roaming_enabled else "on"
            args = {"customer_id": cid, "line_id": lid}
            yield Skill(
                "telecom_roaming",
                "write",
                f"Customer {cid} wants roaming turned {verb} for line {lid}.",
                ((tool, args, None),),
            )
            if line.status.value == "Suspended":
                yield Skill(
                    "telecom_resume",
                    "write",
                    f"Customer {cid} asks to resume suspended line {lid}.",
                    (("resume_line", args, None),),
                )
            ticket = f"The owner of phone number {phone} wants roaming turned {verb} for that line ({lid}). Find the customer first."
            actions = (("get_customer_by_phone", {"phone_number": phone}, None), (tool, args, None))
            yield Skill("telecom_find_roaming", "two_step", ticket, actions)
    for kind, items in (
        ("line", db.lines),
        ("device", db.devices),
        ("bill", db.bills),
        ("plan", db.plans),
    ):
        for item in items:
            item_id = getattr(item, f"{kind}_id")
            yield _lookup(
                "telecom_details",
                f"Show the details of {kind} {item_id}.",
                "get_details_by_id",
                {"id": item_id},
            )


GENERATORS = {"airline": _airline_skills, "retail": _retail_skills, "telecom": _telecom_skills}


def skill_task(
    domain: str, skill: Skill, distractors: tuple[str, ...], *, hint: bool = False
) -> DomainTask:
    """Wrap a :class:`Skill` as a solo :class:`DomainTask` holding a real tau2 ``Task``;
    ``hint`` names the tools to use at the end of the ticket (an easier variant), in the
    domain's API."""
    actions = [
        Action(
            action_id=f"{name}_{i}",
            requestor="assistant",
            name=name,
            arguments=args,
            compare_args=list(compare) if compare else None,
        )
        for i, (name, args, compare) in enumerate(skill.actions)
    ]
    basis = [RewardType.ACTION] if skill.kind == "lookup" else [RewardType.DB, RewardType.ACTION]
    api = variant_api(domain)
    ticket = skill.ticket + (f" Use {' then '.join(skill.tools)}." if hint else "")
    task = Task(
        id=skill.task_id + ("-hint" if hint else ""),
        user_scenario=UserScenario(instructions=ticket),
        ticket=ticket,
        evaluation_criteria=EvaluationCriteria(actions=actions, reward_basis=basis),
    )
    return DomainTask(
        domain=domain,
        task=task,
        source="skills",
        solo=True,
        tool_names=skill.tools + distractors,
        tool_api=api,
    )


def _test_counts(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Test tasks per template: round-robin over the templates (sorted) until ``total``,
    leaving every template at least one train task."""
    counts = dict.fromkeys(sizes, 0)
    while sum(counts.values()) < total:
        open_templates = [t for t in sorted(sizes) if counts[t] < sizes[t] - 1]
        if not open_templates:
            break
        for template in open_templates[: total - sum(counts.values())]:
            counts[template] += 1
    return counts


def gold_signature(skill: Skill) -> tuple[str, ...]:
    """The gold actions of ``skill`` as tau2's action check sees them: each call's tool name
    and the arguments it compares (all unless ``compare_args``), canonical JSON, sorted. Two
    tasks with equal signatures are solved by the same calls."""
    calls = []
    for name, args, compare in skill.actions:
        shown = {k: v for k, v in args.items() if compare is None or k in compare}
        calls.append(json.dumps([name, shown], sort_keys=True))
    return tuple(sorted(calls))


def _test_skills(shuffled: dict[str, list[Skill]], total: int) -> set[str]:
    """Task ids of the test skills: per template the first of its shuffled skills
    (:func:`_test_counts`), except that no test skill may share its gold signature
    (:func:`gold_signature`) with a train skill of any template. A first pick whose signature
    also belongs to a skill left in train goes to train, and the next skill of its template
    whose signature is unique takes its place, so the split sizes stay."""
    owners: dict[tuple[str, ...], list[str]] = {}
    for skills in shuffled.values():
        for skill in skills:
            owners.setdefault(gold_signature(skill), []).append(skill.task_id)
    counts = _test_counts({t: len(s) for t, s in shuffled.items()}, total)
    first = {s.task_id for t, skills in shuffled.items() for s in skills[: counts[t]]}
    clashing = {sig for sig, ids in owners.items() if set(ids) & first and set(ids) - first}

    def unique(skill: Skill) -> bool:
        return len(owners[gold_signature(skill)]) == 1

    chosen: set[str] = set()
    for template, skills in shuffled.items():
        kept = [s.task_id for s in skills[: counts[template]] if gold_signature(s) not in clashing]
        spare = (s.task_id for s in skills[counts[template] :] if unique(s))
        chosen.update(kept, itertools.islice(spare, counts[template] - len(kept)))
    if len(chosen) < sum(counts.values()):
        logger.warning(
            "Only %d of %d skill test tasks have gold actions of their own",
            len(chosen),
            sum(counts.values()),
        )
    return chosen


@functools.cache
def _skill_splits(domain: str, seed: int) -> dict[str, tuple[DomainTask, ...]]:
    base = base_domain(domain)  # a variant draws the same tasks and splits as its base
    rng = random.Random(f"{base}:{seed}")
    db = environment_constructor(base)().tools.db
    by_template: dict[str, list[Skill]] = {}
    for skill in GENERATORS[base](db):
        by_template.setdefault(skill.template, []).append(skill)
    splits: dict[str, list[DomainTask]] = {name: [] for name in SKILL_SPLITS}
    shuffled: dict[str, list[Skill]] = {}
    for template in sorted(by_template):
        skills = list({s.task_id: s for s in by_template[template]}.values())
        rng.shuffle(skills)
        shuffled[template] = skills[:MAX_PER_TEMPLATE]
    test_ids = _test_skills(shuffled, TEST_TASKS_PER_DOMAIN)
    for skills in shuffled.values():
        for skill in skills:
            pool = [t for t in DISTRACTORS[base] if t not in skill.tools]
            distractors = tuple(rng.sample(pool, NUM_DISTRACTORS))
            split = "test" if skill.task_id in test_ids else "train"
            hint = rng.random() < HINT_FRACTION
            splits[split].append(skill_task(domain, skill, distractors, hint=hint))
    for tasks in splits.values():
        rng.shuffle(tasks)
    return {name: tuple(tasks) for name, tasks in splits.items()}


def load_skill_tasks(domain: str, split: str = "train", *, seed: int = 0) -> list[DomainTask]:
    """Skill tasks of ``domain`` (airline, retail, telecom, or a variant such as airline_v2)
    for ``split`` (train, test)."""
    if domain not in SKILL_DOMAINS:
        raise ValueError(
            f"No skill tasks for domain {domain!r}; skill domains: {', '.join(SKILL_DOMAINS)}"
        )
    if split not in SKILL_SPLITS:
        raise ValueError(
            f"Unknown split {split!r} for skill tasks; valid splits: {', '.join(SKILL_SPLITS)}"
        )
    return list(_skill_splits(domain, seed)[split])


class SkillTasks:
    """The ``skills`` task source: compact solo tasks generated from each domain's database,
    with a short prompt (instruction, one example, tool signatures)."""

    name = "skills"
    domains: tuple[str, ...] = SKILL_DOMAINS
    max_tool_response_chars: int | None = SKILL_TOOL_RESPONSE_CHARS

    def load(self, domain: str, split: str, seed: int = 0) -> list[DomainTask]:
        return load_skill_tasks(domain, split, seed=seed)

    def get(self, domain: str, task_id: str, seed: int = 0) -> DomainTask:
        candidates = {
            t.task_id: t for split in SKILL_SPLITS for t in self.load(domain, split, seed)
        }
        if task_id not in candidates:
            raise ValueError(
                f"Unknown task id {task_id!r} for skill tasks of {domain!r}; valid ids: "
                f"{', '.join(candidates)}"
            )
        return candidates[task_id]

    def system_prompt(self, task: DomainTask) -> str:
        return _system_prompt(task.domain, task.tool_names, task.tool_arguments)


@functools.cache
def _system_prompt(domain: str, tool_names: tuple[str, ...] | None, tool_arguments: bool) -> str:
    schemas = agent_tool_schemas(base_domain(domain), True, False, tool_names)
    return skill_system_prompt(domain, schemas, tool_arguments)
