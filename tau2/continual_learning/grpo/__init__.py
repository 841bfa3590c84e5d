"""The GRPO wing: continual GRPO over tau2 domains, with TRL training each domain.

``config`` (GRPOConfig), ``trainer`` (the domain loop), ``step`` (one GRPO step's episodes),
``record`` (the run's scores, statistics and position), ``trainer_view`` (what an algorithm may
read), ``trl_trainer`` (TRL subclass, hooks, loss guard), ``algorithms`` (sequential, replay,
adaptive replay, CLEAR), ``batch`` (step composition), ``trajectory_buffer``, ``rollouts``
(tasks, user, episodes), ``evaluation`` (pass^1 with intervals), ``checkpointing``, ``seeds``.
"""
