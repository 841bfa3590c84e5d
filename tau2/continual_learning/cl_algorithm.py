"""The continual-learning plugin interface shared by the GRPO and supervised trainers.

A :class:`CLAlgorithm` sees the training stream through hooks:

* ``pre_task_hook(trainer, domain)`` before a domain (task) starts;
* ``augment_batch(new_items, current_domain)`` turns the new items of a step into the items
  actually trained on (replay mixes old ones in). For the GRPO trainer the items are tau2
  ``Task`` objects; for the supervised trainer they are ``(inputs, targets)`` batches;
* ``extra_loss(model, batch, current_domain)`` adds a loss term (distillation, behaviour
  cloning...) or returns ``None``;
* ``post_step_hook(trainer, domain)`` after every optimisation step;
* ``post_task_hook(trainer, domain)`` after a domain has been trained and evaluated;
* ``warm_start_replay(domain, num_demos, rng)`` which earlier domains' demonstrations join a
  domain's supervised warm start (GRPO wing), and how many of each;
* ``get_statistics()`` a JSON-serialisable summary; ``state_dict()``/``load_state_dict()``
  everything needed to resume.

Each trainer wing has its own :class:`AlgorithmRegistry` (``GRPO_ALGORITHMS``,
``SUPERVISED_ALGORITHMS``), so that configs can say ``cl_algorithm="replay"`` and a name of the
other wing fails at construction. The trainer attaches an instance with
:meth:`CLAlgorithm.attach`, which sets ``self._trainer``: the same object the hooks receive as
``trainer``. For the GRPO wing it is a read-only view, and what an algorithm may read from it is
documented in one place, :class:`tau2.continual_learning.grpo.trainer_view.TrainerView`.
"""

from __future__ import annotations

import copy
import inspect
import random
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound=type["CLAlgorithm"])


class CLAlgorithm:
    """Base class: every hook is a no-op, so subclasses override only what they need."""

    name: str = "base"
    config_fields: ClassVar[dict[str, str]] = {}
    """Constructor parameters whose config field has another name (parameter -> field)."""

    def __init__(self) -> None:
        self._trainer: Any = None

    @classmethod
    def from_config(cls, config: Any) -> CLAlgorithm:
        """An instance built from a trainer config's flat fields: every constructor parameter
        that the config has (under its own name or the one in ``config_fields``)."""
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        fields = {p: cls.config_fields.get(p, p) for p in params}
        return cls(**{p: getattr(config, f) for p, f in fields.items() if hasattr(config, f)})

    # -- lifecycle ---------------------------------------------------------------------------
    def attach(self, trainer: Any) -> None:
        """Called by a trainer when this instance becomes its algorithm."""
        self._trainer = trainer

    def pre_task_hook(self, trainer: Any, domain: str) -> None:
        """Before training on ``domain`` starts."""

    def augment_batch(self, new_tasks: list[Any], current_domain: str) -> list[Any]:
        """Items to train on this step; the default trains on the new items only."""
        return list(new_tasks)

    def extra_loss(self, model: Any, batch: Any, current_domain: str) -> Any | None:
        """An additional loss tensor for this step, or ``None``."""
        return None

    def post_step_hook(self, trainer: Any, domain: str) -> None:
        """After each optimisation step on ``domain``."""

    def post_task_hook(self, trainer: Any, domain: str) -> None:
        """After ``domain`` has been trained and every domain evaluated."""

    def warm_start_replay(self, domain: str, num_demos: int, rng: random.Random) -> dict[str, int]:
        """How many demonstrations of each earlier domain to mix into ``domain``'s warm start
        of ``num_demos`` new ones (``{earlier_domain: count}``, drawn in this order); seeded
        choices use ``rng``. The default mixes none."""
        return {}

    # -- reporting and resume ----------------------------------------------------------------
    def get_statistics(self) -> dict[str, Any]:
        """A JSON-serialisable summary of what the algorithm did."""
        return {"algorithm": self.name}

    def state_dict(self) -> dict[str, Any]:
        """Picklable state for checkpoints; by default every public and private attribute
        except the trainer reference."""
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if k != "_trainer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            setattr(self, key, copy.deepcopy(value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AlgorithmSlot:
    """A trainer's ``cl_algorithm`` attribute: it accepts only a :class:`CLAlgorithm` and
    attaches each one (:meth:`CLAlgorithm.attach`) to what ``view(trainer)`` returns, the
    trainer itself by default."""

    def __init__(self, view: Callable[[Any], Any] | None = None) -> None:
        self.view = view

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = f"_{name}"

    def __get__(self, trainer: Any, owner: type | None = None) -> Any:
        return self if trainer is None else getattr(trainer, self.attribute)

    def __set__(self, trainer: Any, algorithm: CLAlgorithm) -> None:
        if not isinstance(algorithm, CLAlgorithm):
            raise TypeError(f"cl_algorithm must be a CLAlgorithm, got {type(algorithm).__name__}")
        algorithm.attach(self.view(trainer) if self.view is not None else trainer)
        setattr(trainer, self.attribute, algorithm)


class AlgorithmRegistry:
    """Names of one trainer wing's algorithms (``GRPO_ALGORITHMS``, ``SUPERVISED_ALGORITHMS``).

    Each wing has its own registry, so a config of one wing never accepts an algorithm of the
    other: ``GRPOConfig(cl_algorithm="er")`` fails at construction, naming the GRPO names.
    """

    def __init__(self, wing: str, trainer: str) -> None:
        self.wing = wing
        self.trainer = trainer
        self._classes: dict[str, type[CLAlgorithm]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering a :class:`CLAlgorithm` under ``name``."""

        def decorator(cls: T) -> T:
            if not (inspect.isclass(cls) and issubclass(cls, CLAlgorithm)):
                raise TypeError(f"{cls!r} is not a CLAlgorithm subclass")
            existing = self._classes.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(
                    f"{self.wing} algorithm name {name!r} is already registered by "
                    f"{existing.__name__}"
                )
            self._classes[name] = cls
            cls.name = name
            return cls

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def get(self, name: str) -> type[CLAlgorithm]:
        """The class registered as ``name``; unknown names list the valid ones (and say so
        when the name belongs to the other wing)."""
        if name in self._classes:
            return self._classes[name]
        message = (
            f"Unknown {self.wing} cl_algorithm {name!r}; registered: {', '.join(self.names())}"
        )
        for other in (GRPO_ALGORITHMS, SUPERVISED_ALGORITHMS):
            if other is not self and name in other:
                message += f" ({name!r} is a {other.wing} algorithm, for {other.trainer})"
        raise ValueError(message)


GRPO_ALGORITHMS = AlgorithmRegistry("GRPO", "GRPOTrainer")
"""Algorithms that compose GRPO batches of tau2 tasks (``tau2.continual_learning.grpo``)."""

SUPERVISED_ALGORITHMS = AlgorithmRegistry("supervised", "ContinualTrainer")
"""Tensor-level algorithms of the supervised wing (``tau2.continual_learning.supervised``)."""
