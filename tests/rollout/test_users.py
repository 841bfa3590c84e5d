from __future__ import annotations

import dataclasses

import pytest
import torch
from tau2.data_model.message import AssistantMessage

from tau2.continual_learning import GRPOConfig
from tau2.continual_learning.grpo.rollouts import build_policy, build_user
from tau2.continual_learning.model_loading import wrap_lora
from tau2.continual_learning.rollout import (
    EpisodeRunner,
    HFPolicy,
    HFUser,
    LiteLLMUser,
    SamplingParams,
    get_task,
)
from tau2.continual_learning.rollout.episode import FIRST_AGENT_MESSAGE
from tau2.continual_learning.rollout.prompt import ChatFormat
from tau2.continual_learning.rollout.scripted import ScriptedPolicy
from tau2.continual_learning.tiny_model import build_tiny_model


def test_airline_task_runs_to_the_end_with_the_in_process_user(
    tokenizer, tiny_model, turn_ending_model
):
    task = get_task("airline/3")
    user = HFUser(tiny_model, tokenizer, max_new_tokens=16, temperature=1.0)
    runner = EpisodeRunner(
        HFPolicy(turn_ending_model, tokenizer),
        user=user,
        max_turns=2,
        max_new_tokens_per_turn=8,
        scoring_workers=0,
        seed=1,
    )
    episodes = runner.run([task], num_generations=2)
    for episode in episodes:
        assert episode.termination_reason in {"max_turns", "max_new_tokens", "user_error"}
        assert episode.reward == 0.0 and episode.num_turns >= 1
        roles = [m.role for m in episode.messages]
        assert roles[:2] == ["assistant", "user"]  # tau2's greeting, then the simulated user
        opening = episode.messages[1].content
        assert opening and opening in tokenizer.decode(episode.prompt_ids)
        assert len(episode.completion_ids) == len(episode.env_mask) == len(episode.logprobs)
    assert user.backend.cache.num_tokens == 0  # the run's end freed the user's prefix cache


AGENT_TURNS = (FIRST_AGENT_MESSAGE, "Could you give me your user id and reservation number?")


def _talkative_model(tokenizer, seed=3):
    """The tiny model with an untied random output head: its greedy replies are varied text (with
    the tied head, greedy decoding repeats the prompt's last token, a newline)."""
    model = build_tiny_model(tokenizer, seed=seed)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=False)
    with torch.no_grad():
        head.weight.copy_(
            torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(seed))
        )
    model.config.tie_word_embeddings = False
    model.lm_head = head
    return model


def _conversation(user, seed=1):
    """The user's replies to two fixed agent messages on airline/3, from a fresh state."""
    history = user.start(get_task("airline/3"), None)
    replies = [
        user.reply([(history, AssistantMessage(role="assistant", content=text))], seed + i)[0]
        for i, text in enumerate(AGENT_TURNS)
    ]
    return [reply.content for reply in replies]


def _opening_prompt(tokenizer):
    """The token ids the user model continues for its opening message."""
    history = HFUser.start(None, get_task("airline/3"), None)
    history.append({"role": "user", "content": FIRST_AGENT_MESSAGE})
    text = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _train_step(model, tokenizer):
    """One AdamW step on a language-model loss; asserts that it moved the trained weights."""
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    ids = torch.tensor([ChatFormat.from_tokenizer(tokenizer).prompt_ids("s", [("user", "hi")])])
    model.train()
    model(ids, labels=ids).loss.backward()
    torch.optim.AdamW(trained, lr=0.5).step()
    model.eval()
    assert any(not torch.equal(b, p) for b, p in zip(before, trained, strict=True))


@pytest.mark.parametrize("use_peft", [True, False], ids=["lora", "full_fine_tuning"])
def test_the_in_process_user_is_the_base_model_unchanged_while_the_policy_trains(
    tmp_path, tokenizer, use_peft
):
    model = _talkative_model(tokenizer)
    if use_peft:
        model = wrap_lora(model, 8, 16, 0.0, None)
    config = GRPOConfig(
        output_dir=str(tmp_path),
        task_source="tau2",
        domains=["airline"],
        use_peft=use_peft,
        user_temperature=0.0,
        report_to=[],
    )
    policy = build_policy(
        config, model, tokenizer, context_limit=model.config.max_position_embeddings
    )
    user = build_user(config, model, tokenizer)
    assert isinstance(user, HFUser) and user.sampling.temperature == 0.0
    user.sampling = dataclasses.replace(user.sampling, max_new_tokens=16)  # a fast test
    before = _conversation(user)
    assert (
        all(before) and _conversation(user, seed=5) == before
    )  # temperature 0: greedy, whatever the seed

    _train_step(model, tokenizer)
    prompt = _opening_prompt(tokenizer)
    greedy = SamplingParams(max_new_tokens=user.sampling.max_new_tokens, temperature=0)
    # the policy now answers the user's own prompt differently (and its engine has cached it)
    trained_opening = tokenizer.decode(
        policy.generate([prompt], greedy)[0].token_ids, skip_special_tokens=True
    ).strip()
    assert trained_opening != before[0]
    assert _conversation(user) == before

    base = _talkative_model(tokenizer)  # the same weights, never trained
    ids = base.generate(
        torch.tensor([prompt]),
        do_sample=False,
        max_new_tokens=user.sampling.max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )[0, len(prompt) :]
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == before[0]


def test_user_temperature_reaches_the_in_process_user(tmp_path, tokenizer):
    config = GRPOConfig(
        output_dir=str(tmp_path),
        task_source="tau2",
        domains=["retail"],
        user_temperature=1.0,
        report_to=[],
    )
    user = build_user(config, _talkative_model(tokenizer), tokenizer)
    assert user.sampling.temperature == 1.0
    user.sampling = dataclasses.replace(user.sampling, max_new_tokens=8)  # a fast test
    assert _conversation(user, seed=1) != _conversation(user, seed=2)  # sampled
    assert _conversation(user, seed=1) == _conversation(user, seed=1)  # seeded


def test_litellm_user_errors_end_only_that_episode(tokenizer):
    task = get_task("airline/0")
    user = LiteLLMUser(
        "hosted_vllm/fake-user",
        api_base="http://127.0.0.1:9/v1",
        llm_args={"num_retries": 0, "timeout": 2},
    )
    policy = ScriptedPolicy(tokenizer, lambda context: "unused")
    (episode,) = EpisodeRunner(policy, user=user, scoring_workers=0).run([task])
    assert episode.termination_reason == "user_error" and episode.reward == 0.0
    assert "episode_error" in episode.reward_info
