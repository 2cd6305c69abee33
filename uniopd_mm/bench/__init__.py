"""Benchmarks: every stage against its library floor (``floor``), a step against TRL (``step``), the GPU shapes
(``gpu``), the rollout (``rollout``), shared prompts (``shared_prompts``) and teacher-scoring memory
(``teacher_memory``). Each module's docstring has its command; ``scripts/bench_<name>.py`` runs it."""
