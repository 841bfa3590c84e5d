"""K DQN agents consolidated into one through a Lake on disk and Ponds on the device.

CPU run that learns in minutes (MinAtar Breakout, K = 4)::

    python examples/tiered_dqn.py --out /tmp/tiered_run

Atari at 84x84 through gymnasium + ale-py (the full-scale settings are in docs/tiered.md)::

    python examples/tiered_dqn.py --env ale:Breakout --total-frames 100000000 ...

Rerunning with the same ``--out`` resumes from the newest checkpoint; ``--max-phases`` stops
after that many phases (a planned break). ``--plot`` draws the learning curve from the
metrics file, frames on the x axis.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tau2.continual_learning.tiered import (
    ConsolidationSchedule,
    EpsilonSchedule,
    Field,
    Lake,
    Pond,
    ScheduleConfig,
    StepResult,
    default_device,
)

logger = logging.getLogger("tiered_dqn")


def q_network(obs_shape: Sequence[int], n_actions: int) -> nn.Module:
    """MinAtar's small CNN for 10x10 boards, the Nature DQN CNN for 84x84 frames."""
    channels, height, _ = obs_shape
    if height <= 16:
        return nn.Sequential(
            nn.Conv2d(channels, 16, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * (height - 2) ** 2, 128),
            nn.ReLU(),
            nn.Linear(128, n_actions),
        )
    return nn.Sequential(
        nn.Conv2d(channels, 32, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512),
        nn.ReLU(),
        nn.Linear(512, n_actions),
    )


class DQNAgent:
    """DQN (Huber loss, target network, Adam) with an epsilon-greedy policy."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        n_actions: int,
        epsilon: EpsilonSchedule,
        *,
        lr: float = 2.5e-4,
        gamma: float = 0.99,
        target_every: int = 500,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.n_actions = n_actions
        self.scale = 1.0 / 255.0 if obs_shape[1] > 16 else 1.0  # uint8 frames vs bool boards
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = q_network(obs_shape, n_actions).to(self.device)
        self.target = copy.deepcopy(self.net)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, eps=1e-5)
        self.epsilon = epsilon
        self.gamma = gamma
        self.target_every = target_every
        self.updates = 0
        self.rng = torch.Generator().manual_seed(seed)

    def _q(self, net: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        return net(obs.to(self.device).float() * self.scale)

    def act(self, obs: torch.Tensor) -> int:
        """Epsilon-greedy action for one observation."""
        if torch.rand((), generator=self.rng).item() < self.epsilon.value():
            return int(torch.randint(self.n_actions, (), generator=self.rng))
        with torch.no_grad():
            return int(self._q(self.net, obs[None]).argmax(1))

    def learn(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One DQN update on a batch from a pond."""
        q = self._q(self.net, batch["obs"]).gather(1, batch["action"].to(self.device)[:, None])
        with torch.no_grad():
            best_next = self._q(self.target, batch["next_obs"]).max(1).values
            done = batch["terminated"].to(self.device).float()
            target = batch["reward"].to(self.device) + self.gamma * (1.0 - done) * best_next
        loss = F.smooth_l1_loss(q.squeeze(1), target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_every == 0:
            self.target.load_state_dict(self.net.state_dict())
        return {"loss": loss.item()}

    def clone_from(self, other: DQNAgent) -> None:
        """Take ``other``'s networks and optimizer state; keep this agent's own RNG."""
        self.net.load_state_dict(other.net.state_dict())
        self.target.load_state_dict(other.target.state_dict())
        self.optimizer.load_state_dict(other.optimizer.state_dict())
        self.updates = other.updates

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epsilon": self.epsilon.state_dict(),
            "updates": self.updates,
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epsilon.load_state_dict(state["epsilon"])
        self.updates = state["updates"]
        self.rng.set_state(state["rng"])


class MinAtarActor:
    """A MinAtar game; observations are (channels, 10, 10) bool boards; 1 frame per step."""

    def __init__(self, game: str, seed: int) -> None:
        from minatar import Environment

        self.env = Environment(game, sticky_action_prob=0.1)
        self.env.seed(seed)
        self.env.reset()
        self.episode_return = 0.0

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return tuple(self._obs().shape)

    @property
    def n_actions(self) -> int:
        return self.env.num_actions()

    def _obs(self) -> torch.Tensor:
        return torch.from_numpy(self.env.state()).permute(2, 0, 1).contiguous()

    def step(self, agent: DQNAgent, pond: Pond | None) -> StepResult:
        obs = self._obs()
        action = agent.act(obs)
        reward, terminated = self.env.act(action)
        if pond is not None:
            pond.add(transition(obs, action, reward, terminated, self._obs()))
        self.episode_return += reward
        if not terminated:
            return StepResult(1)
        finished, self.episode_return = self.episode_return, 0.0
        self.env.reset()
        return StepResult(1, [finished])

    def state_dict(self) -> dict[str, Any]:
        return {"env": pickle.dumps(self.env), "episode_return": self.episode_return}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.env = pickle.loads(state["env"])  # our own checkpoint, written by state_dict
        self.episode_return = state["episode_return"]


class AtariActor:
    """An ALE game through gymnasium: grayscale, frame skip 4, 84x84, the last 3 frames."""

    STACK = 3

    def __init__(self, game: str, seed: int) -> None:
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        self.env = gym.make(
            f"ALE/{game}-v5", obs_type="grayscale", frameskip=4, repeat_action_probability=0.25
        )
        self.seed = seed
        self.episodes = 0
        self.frames: deque[torch.Tensor] = deque(maxlen=self.STACK)
        self._reset()

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.STACK, 84, 84)

    @property
    def n_actions(self) -> int:
        return int(self.env.action_space.n)

    @staticmethod
    def _resize(screen: Any) -> torch.Tensor:
        frame = torch.from_numpy(screen)[None, None].float()
        return F.interpolate(frame, size=(84, 84), mode="area")[0, 0].round().to(torch.uint8)

    def _reset(self) -> None:
        screen, _ = self.env.reset(seed=self.seed + 1000 * self.episodes)
        self.frames.extend([self._resize(screen)] * self.STACK)
        self.episode_return = 0.0

    def step(self, agent: DQNAgent, pond: Pond | None) -> StepResult:
        obs = torch.stack(list(self.frames))
        action = agent.act(obs)
        screen, reward, terminated, truncated, _ = self.env.step(action)
        self.frames.append(self._resize(screen))
        if pond is not None:
            clipped = float(max(-1.0, min(1.0, reward)))
            pond.add(transition(obs, action, clipped, terminated, torch.stack(list(self.frames))))
        self.episode_return += float(reward)
        if not (terminated or truncated):
            return StepResult(4)
        finished = self.episode_return
        self.episodes += 1
        self._reset()
        return StepResult(4, [finished])

    def state_dict(self) -> dict[str, Any]:
        """Episode count only: the emulator is not saved, a resumed actor starts a new episode."""
        return {"episodes": self.episodes}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.episodes = state["episodes"]
        self._reset()


def transition(
    obs: torch.Tensor, action: int, reward: float, terminated: bool, next_obs: torch.Tensor
) -> dict[str, torch.Tensor]:
    """One transition as a batch of one, with the lake's fields."""
    return {
        "obs": obs[None],
        "next_obs": next_obs[None],
        "action": torch.tensor([action]),
        "reward": torch.tensor([reward], dtype=torch.float32),
        "terminated": torch.tensor([bool(terminated)]),
    }


def make_actor(env: str, seed: int) -> MinAtarActor | AtariActor:
    """``minatar:<game>`` or ``ale:<Game>``."""
    kind, _, game = env.partition(":")
    if kind == "minatar":
        return MinAtarActor(game, seed)
    if kind == "ale":
        return AtariActor(game, seed)
    raise ValueError(f"--env must be minatar:<game> or ale:<Game>, got {env!r}")


def make_evaluate(env: str, episodes: int, seed: int, max_steps: int = 5000):
    """Mean return of ``episodes`` episodes at epsilon 0.01 on a separate, seeded environment."""

    def evaluate(agent: DQNAgent) -> dict[str, float]:
        if episodes == 0:
            return {}
        actor = make_actor(env, seed)
        saved = agent.epsilon.state_dict()
        agent.epsilon.reset(0.01)
        returns: list[float] = []
        for _ in range(max_steps):
            returns += actor.step(agent, None).episode_returns
            if len(returns) == episodes:
                break
        agent.epsilon.load_state_dict(saved)
        return {"eval_return": sum(returns) / len(returns)} if returns else {}

    return evaluate


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="minatar:breakout")
    p.add_argument("--out", type=Path, required=True, help="lake, checkpoints, metrics")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--total-frames", type=int, default=400_000)
    p.add_argument("--phase-steps", type=int, default=5_000, help="steps per agent per phase")
    p.add_argument("--consolidation-updates", type=int, default=5_000)
    p.add_argument("--replay-ratio", type=float, default=8.0, help="big-agent updates per step")
    p.add_argument("--updates-per-step", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-starts", type=int, default=1_000)
    p.add_argument("--pond-capacity", type=int, default=20_000)
    p.add_argument("--big-pond-capacity", type=int, default=100_000)
    p.add_argument("--lake-capacity", type=int, default=2_000_000)
    p.add_argument("--epsilon-decay-steps", type=int, default=10_000)
    p.add_argument("--epsilon-end", type=float, default=0.05)
    p.add_argument("--epsilon-reset", type=float, default=None, help="default: 1.0")
    p.add_argument("--lr", type=float, default=2.5e-4)
    p.add_argument("--target-every", type=int, default=1_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--max-phases", type=int, default=None, help="stop after this many phases")
    p.add_argument("--keep-checkpoints", type=int, default=None, help="default: keep all")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="write the learning curve PNG here")
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> ConsolidationSchedule:
    """Agents, actors, ponds, lake and schedule for ``args`` (resumed if checkpoints exist)."""
    device = torch.device(args.device) if args.device else default_device()
    actors = [make_actor(args.env, args.seed + k) for k in range(args.agents)]
    big_actor = make_actor(args.env, args.seed + args.agents)
    obs_shape, n_actions = actors[0].obs_shape, actors[0].n_actions
    obs_dtype = torch.bool if args.env.startswith("minatar") else torch.uint8
    fields = {
        "obs": Field(obs_shape, obs_dtype),
        "action": Field((), torch.int64),
        "reward": Field((), torch.float32),
        "terminated": Field((), torch.bool),
    }
    lake_dir = args.out / "lake"
    lake = (
        Lake.open(lake_dir)
        if (lake_dir / "lake.json").exists()
        else Lake.create(lake_dir, args.lake_capacity, fields)
    )

    def agent(seed: int) -> DQNAgent:
        epsilon = EpsilonSchedule.linear(1.0, args.epsilon_end, args.epsilon_decay_steps)
        return DQNAgent(
            obs_shape,
            n_actions,
            epsilon,
            lr=args.lr,
            target_every=args.target_every,
            seed=seed,
            device=device,
        )

    def pond(capacity: int) -> Pond:
        return Pond(capacity, fields, device=device, lake=lake, chunk_size=capacity // 4)

    config = ScheduleConfig(
        total_frames=args.total_frames,
        phase_steps=args.phase_steps,
        consolidation_updates=args.consolidation_updates,
        replay_ratio=args.replay_ratio,
        updates_per_step=args.updates_per_step,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        epsilon_reset=args.epsilon_reset,
        checkpoint_dir=str(args.out / "checkpoints"),
        keep_checkpoints=args.keep_checkpoints,
        metrics_path=str(args.out / "metrics.jsonl"),
        seed=args.seed,
        progress=not args.no_progress,
    )
    schedule = ConsolidationSchedule(
        config,
        agents=[agent(args.seed + k) for k in range(args.agents)],
        actors=actors,
        ponds=[pond(args.pond_capacity) for _ in range(args.agents)],
        big_agent=agent(args.seed + args.agents),
        big_pond=pond(args.big_pond_capacity),
        big_actor=big_actor,
        lake=lake,
        evaluate=make_evaluate(args.env, args.eval_episodes, seed=10_000 + args.seed),
    )
    schedule.resume()
    return schedule


def plot(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Learning curve: training returns of the K agents and the consolidated agent's eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["frames"], r["return_mean"]) for r in records if r.get("return_mean") is not None]
    evals = [(r["frames"], r["eval_return"]) for r in records if "eval_return" in r]
    if train:
        ax.plot(*zip(*train, strict=True), "o-", label="K agents, training episodes")
    if evals:
        ax.plot(*zip(*evals, strict=True), "s-", label="consolidated agent, evaluation")
    ax.set_xlabel("global frames")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the schedule; return every metrics record of the run so far."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    schedule = build(args)
    try:
        schedule.run(max_phases=args.max_phases)
    finally:
        schedule.lake.close()
    records = schedule.metrics.records()
    if args.plot is not None:
        plot(records, args.plot)
    logger.info("final record: %s", json.dumps(records[-1]) if records else None)
    return records


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    main()
