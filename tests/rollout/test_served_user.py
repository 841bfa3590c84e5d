"""Official tau2 tasks with a user simulator served over HTTP by a real OpenAI-compatible server:
``transformers serve`` (transformers' own server, installed with the toolkit) serving the
embedded model on the loopback address (a random model's replies are blank lines, which tau2
takes for no message). The user's replies come from the server; episodes end at the
user's stop or the turn limit and are scored by tau2's evaluators; a user whose requests fail
ends only its own episodes, with the server's message."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tau2.continual_learning import GRPOConfig, GRPOTrainer
from tau2.continual_learning.default_model import default_model_path
from tau2.continual_learning.rollout import CALL_PREFIX, EpisodeRunner, LiteLLMUser, load_tasks
from tau2.continual_learning.rollout.scripted import ScriptedPolicy
from tau2.continual_learning.tiny_model import build_tiny_model

RESPOND = '<tool_call>{"name": "respond", "arguments": {"message": "How can I help?"}}</tool_call>'
USER_ARGS = {"max_tokens": 8, "num_retries": 0, "timeout": 60}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tokenizer) -> Iterator[tuple[str, str]]:
    """``(base URL, model folder)`` of a running ``transformers serve`` with the embedded model
    (its local folder exists once the ``tokenizer`` fixture has converted it)."""
    folder = default_model_path()
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder)]
    command += [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--default-seed",
        "0",
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the server did not answer within 120 s"
            try:
                urllib.request.urlopen(base + "/models", timeout=2).close()
                break
            except urllib.error.HTTPError:  # it answers (its model listing scans a hub cache)
                break
            except OSError:
                time.sleep(0.5)
        yield base, str(folder)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_failing_user_request_ends_its_episode_with_the_servers_message(server, tokenizer):
    base, _ = server
    tasks = load_tasks("airline", "test", "tau2")[:1]
    bad = LiteLLMUser("hosted_vllm/no-such-model", api_base=base, llm_args=USER_ARGS)
    policy = ScriptedPolicy(tokenizer, lambda context: RESPOND, prefix=CALL_PREFIX)
    with EpisodeRunner(policy, user=bad, max_turns=3, scoring_workers=0) as runner:
        (failed,) = runner.run(tasks)
    assert failed.termination_reason == "user_error" and failed.reward == 0.0
    assert "no-such-model" in json.dumps(failed.reward_info["episode_error"])  # the server's 400


def test_a_run_on_official_tasks_with_the_served_user_writes_scored_metrics(
    server, tmp_path, tokenizer
):
    base, model = server
    policy = tmp_path / "tiny"  # the policy: the tiny model
    build_tiny_model(tokenizer).save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    config = GRPOConfig(
        model_name_or_path=str(policy),
        output_dir=str(tmp_path / "run"),
        task_source="tau2",
        domains=["airline", "retail"],
        user_mode="llm",
        user_llm=f"hosted_vllm/{model}",
        user_api_base=base,
        max_steps_per_domain=1,
        batch_size_per_gpu=1,
        num_samples_per_prompt=2,
        eval_tasks_per_domain=1,
        max_turns=2,
        max_new_tokens_per_turn=8,
        warm_start_demos_per_domain=0,
        user_max_new_tokens=8,
        report_to=[],
    )
    trainer = GRPOTrainer(config)
    metrics = trainer.train()
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["accuracy_matrix"] == metrics["accuracy_matrix"]
    assert len(metrics["accuracy_matrix"]) == 2 and metrics["global_steps"] == 2
    for row in written["accuracy_matrix"]:  # every domain scored after every domain
        assert len(row) == 2 and all(0.0 <= score <= 1.0 for score in row)
    for domain in ("airline", "retail"):  # the last evaluation's episodes
        for episode in trainer.evaluator.last_episodes[domain]:
            # the user's stop, the turn limit or the random policy's endless turn: no error
            assert episode.termination_reason != "user_error", episode.reward_info
            users = [m for m in episode.messages if m.role == "user"]
            assert users and all(m.content.strip() for m in users)  # the server's replies
            assert "episode_error" not in episode.reward_info
            assert episode.reward in (0.0, 1.0)  # tau2's evaluators scored it
