from __future__ import annotations

import pytest

from tau2.continual_learning.rollout import (
    CALL_PREFIX,
    EpisodeRunner,
    HFPolicy,
    get_task,
    load_tasks,
)
from tau2.continual_learning.rollout.scripted import ScriptedPolicy, ScriptedUser
from tau2.continual_learning.rollout.tool_format import format_call


class RecordingPolicy:
    """Wraps a policy and keeps every context it was asked to continue."""

    def __init__(self, inner):
        self.inner, self.tokenizer, self.contexts = inner, inner.tokenizer, []

    def generate(self, prompts, sampling, seed=None):
        generations = self.inner.generate(prompts, sampling, seed)
        self.contexts += [(list(p), g) for p, g in zip(prompts, generations, strict=True)]
        return generations


def _skills(domain, n, split="train"):
    return load_tasks(domain, split, task_source="skills")[:n]


def test_token_assembly_is_exactly_what_the_model_saw(tokenizer, turn_ending_model):
    policy = RecordingPolicy(HFPolicy(turn_ending_model, tokenizer))
    tasks = _skills("telecom", 2)
    runner = EpisodeRunner(
        policy, max_turns=4, max_new_tokens_per_turn=12, temperature=1.0, scoring_workers=0
    )
    episodes = runner.run(tasks, num_generations=3)
    assert [e.key for e in episodes] == [t.key for t in tasks for _ in range(3)]
    assert [e.generation_index for e in episodes] == [0, 1, 2, 0, 1, 2]
    for episode in episodes:
        sequence = episode.prompt_ids + episode.completion_ids
        assert len(episode.completion_ids) == len(episode.env_mask) == len(episode.logprobs)
        assert episode.completion_text == tokenizer.decode(
            episode.completion_ids, skip_special_tokens=False
        )
        # every model turn: the context it was sampled from is a prefix of the final sequence,
        # its tokens follow with mask 1 and their sampling log-probs. Group members may sample
        # identical turns from one context in other batch rows, whose log-probs can differ in
        # the last bit (CPU kernels round per row): the episode's must be one of theirs, exactly
        turns: dict[int, list] = {}
        for c, g in policy.contexts:
            if sequence[: len(c) + len(g.token_ids)] == c + g.token_ids and len(c) >= len(
                episode.prompt_ids
            ):
                turns.setdefault(len(c), []).append((c, g))
        assert len(turns) == episode.num_turns >= 1
        for samples in turns.values():
            context, generation = samples[0]
            start = len(context) - len(episode.prompt_ids)
            end = start + len(generation.token_ids)
            assert (
                sequence[len(context) : len(context) + len(generation.token_ids)]
                == generation.token_ids
            )
            assert episode.env_mask[start:end] == [1] * len(generation.token_ids)
            assert episode.logprobs[start:end] in [g.logprobs for _, g in samples]
        assert sum(episode.env_mask) == sum(len(s[0][1].token_ids) for s in turns.values())
        assert all(
            lp == 0.0 for lp, m in zip(episode.logprobs, episode.env_mask, strict=True) if m == 0
        )
        assert episode.termination_reason in {"max_new_tokens", "max_turns"}
    assert max(e.num_turns for e in episodes) > 1  # env turns were appended between model turns
    assert any("<tool_response>\nError: invalid JSON" in e.completion_text for e in episodes)


def _script_runner(tokenizer, turns, **kwargs):
    """A runner whose policy writes ``turns`` in order (the prefix is already in the context)."""
    state = {"i": 0}

    def script(context):
        text = turns[min(state["i"], len(turns) - 1)]
        state["i"] += 1
        return text

    kwargs.setdefault("scoring_workers", 0)
    return EpisodeRunner(ScriptedPolicy(tokenizer, script, prefix=CALL_PREFIX), **kwargs)


def test_tool_errors_go_back_to_the_model(tokenizer):
    task = _skills("telecom", 1)[0]
    turns = [
        CALL_PREFIX + 'oops {"arguments"',  # malformed JSON
        format_call("no_such_tool", {}),
        format_call("get_customer_by_id", {"wrong_arg": 1}),
        format_call("get_customer_by_id", {"customer_id": "C1001"}),
        format_call("done", {}),
    ]
    (episode,) = _script_runner(tokenizer, turns, max_turns=10).run([task])
    assert episode.termination_reason == "agent_stop" and episode.num_turns == 5
    text = episode.completion_text
    assert "Error: invalid JSON" in text
    assert "Error: Tool 'no_such_tool' not found" in text
    assert "Error:" in text and "wrong_arg" in text
    assert '"customer_id": "C1001"' in text and "John Smith" in text
    assert "</tool_response>\nIf the ticket is resolved, call done." in text  # solo reminder
    assert not any("call done" in (m.content or "") for m in episode.messages if m.role == "tool")
    tool_messages = [m for m in episode.messages if m.role == "tool"]
    assert [m.error for m in tool_messages] == [True, True, False]


def test_limits_end_episodes_with_a_reason(tokenizer):
    task = _skills("telecom", 1)[0]
    call = format_call("get_details_by_id", {"id": "L1001"})
    assert (
        _script_runner(tokenizer, [call], max_turns=3).run([task])[0].termination_reason
        == "max_turns"
    )
    long_turn = call + " padding" * 50
    cut = _script_runner(tokenizer, [long_turn], max_new_tokens_per_turn=16).run([task])[0]
    assert cut.termination_reason == "max_new_tokens" and cut.reward == 0.0
    assert (
        _script_runner(tokenizer, ["no call"], max_errors=2).run([task])[0].termination_reason
        == "too_many_errors"
    )
    squeezed = _script_runner(tokenizer, [call], max_context_tokens=700).run([task])[0]
    assert squeezed.termination_reason == "max_context"
    assert len(squeezed.prompt_ids) + len(squeezed.completion_ids) <= 700


def test_done_must_be_alone_and_respond_is_user_mode_only(tokenizer):
    task = _skills("telecom", 1)[0]
    turns = [
        format_call("get_details_by_id", {"id": "L1001"}) + format_call("done", {}),
        format_call("respond", {"message": "hi"}),
        format_call("done", {}),
    ]
    (episode,) = _script_runner(tokenizer, turns, stop_at_call_end=False).run([task])
    assert "'done' must be the only call of its turn" in episode.completion_text
    assert "Tool 'respond' not found" in episode.completion_text
    assert episode.termination_reason == "agent_stop"


def test_crashes_inside_an_episode_become_a_termination(tokenizer, monkeypatch):
    task = _skills("telecom", 2)
    from tau2.continual_learning.rollout import episode as episode_module

    original = episode_module.EpisodeState._act

    def exploding(self, text):
        if self.generation_index == 1:
            raise RuntimeError("boom")
        return original(self, text)

    monkeypatch.setattr(episode_module.EpisodeState, "_act", exploding)
    episodes = _script_runner(tokenizer, [format_call("done", {})]).run(task, num_generations=2)
    assert [e.termination_reason for e in episodes] == [
        "agent_stop",
        "crash",
        "agent_stop",
        "crash",
    ]
    assert episodes[1].reward == 0.0 and "boom" in episodes[1].reward_info["episode_error"]


def test_user_tasks_need_a_user_and_bad_arguments_fail_early(tokenizer, tiny_model):
    runner = EpisodeRunner(HFPolicy(tiny_model, tokenizer), scoring_workers=0)
    with pytest.raises(ValueError, match="needs a user simulator"):
        runner.run([get_task("airline/3")])
    with pytest.raises(ValueError, match="num_generations"):
        runner.run(_skills("telecom", 1), num_generations=0)
    with pytest.raises(TypeError, match="DomainTask"):
        runner.run([get_task("airline/3").task])
    with pytest.raises(ValueError, match="max_turns"):
        EpisodeRunner(HFPolicy(tiny_model, tokenizer), max_turns=0)
    with pytest.raises(ValueError, match="user must be"):
        EpisodeRunner(HFPolicy(tiny_model, tokenizer), user="gpt")


def test_scoring_pool_gives_the_inline_results(tokenizer):
    from tau2.continual_learning.rollout.scripted import gold_script

    tasks = _skills("retail", 2) + _skills("telecom", 2)
    rewards = []
    for workers in (0, 1):
        with EpisodeRunner(
            ScriptedPolicy(tokenizer, gold_script(tasks), prefix=CALL_PREFIX),
            scoring_workers=workers,
        ) as runner:
            rewards.append(
                [(e.reward, e.reward_info["reward_breakdown"]) for e in runner.run(tasks)]
            )
    assert rewards[0] == rewards[1]
    assert [r for r, _ in rewards[0]] == [1.0] * 4


def test_scoring_workers_exist_before_the_first_policy_call(tokenizer):
    """Workers forked mid-run share the run's buffers copy-on-write, which taxes every later
    write to them; the runner forks them before the policy's first call."""
    import multiprocessing

    from tau2.continual_learning.rollout.scripted import gold_script

    tasks = _skills("retail", 1)
    scripted = ScriptedPolicy(tokenizer, gold_script(tasks), prefix=CALL_PREFIX)
    seen: list[set[int]] = []

    def children() -> set[int]:
        return {p.pid for p in multiprocessing.active_children()}

    class Watching:
        tokenizer = scripted.tokenizer

        def generate(self, prompts, sampling, seed=None):
            seen.append(children())
            return scripted.generate(prompts, sampling, seed)

    with EpisodeRunner(Watching(), scoring_workers=1) as runner:
        before = children()  # no worker until a run starts
        (episode,) = runner.run(tasks)
    assert episode.reward == 1.0
    assert seen and seen[0] - before  # a new worker process, there at the first call


def test_user_mode_with_scripted_user_replays_the_conversation(tokenizer):
    task = get_task("airline/0")  # trivial: an empty conversation already scores 1.0
    runner = _script_runner(
        tokenizer, [format_call("respond", {"message": "Goodbye"})], user=ScriptedUser()
    )
    (episode,) = runner.run([task])
    assert episode.termination_reason == "user_stop" and episode.reward == 1.0 and task.trivial
    roles = [m.role for m in episode.messages]
    assert roles == ["assistant", "user", "assistant", "user"]
    assert "Hello, this is about airline/0." in tokenizer.decode(episode.prompt_ids)


def test_turns_stop_after_the_first_call_and_the_env_closes_them(tokenizer):
    task = _skills("telecom", 1)[0]
    two_calls = (
        format_call("get_details_by_id", {"id": "L1001"})
        + " trailing text"
        + format_call("done", {})
    )
    (episode,) = _script_runner(tokenizer, [two_calls, format_call("done", {})]).run([task])
    assert episode.termination_reason == "agent_stop" and episode.num_turns == 2
    first_close = episode.completion_text.index("</tool_call>") + len("</tool_call>")
    assert episode.completion_text[first_close:].startswith(
        "<|im_end|>\n<|im_start|>user\n<tool_response>"
    )
    eos_position = episode.completion_ids.index(tokenizer.eos_token_id)
    assert episode.env_mask[eos_position] == 0 and episode.env_mask[eos_position - 1] == 1


def test_long_tool_responses_are_shortened_for_the_model_only(tokenizer):
    """The model sees head and tail of a long response; tau2 scores the whole one."""
    task = next(t for t in _skills("airline", 400, "test") if "find_cancel" in t.task_id)
    from tau2.continual_learning.rollout.scripted import gold_turns

    turns = gold_turns(task)
    whole = _script_runner(tokenizer, turns, max_turns=10).run([task])[0]
    cut = _script_runner(tokenizer, turns, max_turns=10, max_tool_response_chars=200).run([task])
    (cut,) = cut
    assert whole.reward == cut.reward == 1.0
    first = next(m for m in cut.messages if m.role == "tool").content
    assert len(first) > 400 and first in whole.completion_text and first not in cut.completion_text
    assert first[:133] in cut.completion_text and first[-67:] in cut.completion_text  # ids kept
    assert f"...[{len(first) - 200} characters omitted]..." in cut.completion_text
    assert len(cut.completion_ids) < len(whole.completion_ids)
    with pytest.raises(ValueError, match="max_tool_response_chars"):
        _script_runner(tokenizer, turns, max_tool_response_chars=10)
