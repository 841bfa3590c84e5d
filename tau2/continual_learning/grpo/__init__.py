"""The GRPO wing: continual GRPO over tau2 domains, with TRL as the engine.

``config`` (GRPOConfig), ``trainer`` (the domain loop), ``engine`` (TRL subclass, callbacks,
loss guard), ``algorithms`` (sequential, replay, adaptive replay, CLEAR), ``batch`` (step
composition), ``trajectory_buffer``, ``rollouts`` (tasks, user, episodes), ``evaluation``
(pass^1 with intervals), ``checkpointing``.
"""
