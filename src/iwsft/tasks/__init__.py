"""Tasks and their verifiers: what a completion is worth, and which answer it gives.

Every stage that scores goes through one `Task` (picked by params.yaml `task.name`, built by
`from_params`): `sample` (the reward of each sample), curate (the reward of a raw record that has an
`answer` but no `reward`, iwsft.tasks.rewards) and `evaluate` (pass@1, greedy, maj@k). None of them
knows which task it is. The interface is iwsft.tasks.base.Task; one module per task:

  chain_sum       the embedded demo (its prompt generator and verifier, unchanged)
  reasoning_gym   any reasoning-gym dataset
  math            math-verify, time-boxed in a worker process (math_worker.py)
  exact           normalised string match
  custom          your own `task.scorer: mypkg.scoring:score`

and what the built-ins share: iwsft.tasks.text (Unicode minus signs and full-width digits read as
ASCII; an answer copied from the prompt is no answer), iwsft.tasks.final_answer (math's final answer).

A task's module is imported only when it is built: reasoning-gym and math-verify load only for the
tasks that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iwsft.tasks.base import Task, check_score, try_scorer  # noqa: F401  (the interface, re-exported)

if TYPE_CHECKING:
    from iwsft.config.schema import Params
    from iwsft.config.schema import Task as TaskConfig

NAMES = ("chain_sum", "reasoning_gym", "math", "exact", "custom")


def task_class(name: str) -> type[Task]:
    """The class of task `name` (one of NAMES). Imported here, not at the top, and by plain import
    statements, not by name: iwsft.imports reads them to list each stage's code deps."""
    if name == "chain_sum":
        from iwsft.tasks.chain_sum import ChainSumTask

        return ChainSumTask
    if name == "reasoning_gym":
        from iwsft.tasks.reasoning_gym import ReasoningGymTask

        return ReasoningGymTask
    if name == "math":
        from iwsft.tasks.math import MathTask

        return MathTask
    if name == "exact":
        from iwsft.tasks.exact import ExactTask

        return ExactTask
    from iwsft.tasks.custom import CustomTask

    return CustomTask


def build(config: TaskConfig) -> Task:
    """The task params.yaml's typed `task:` section (iwsft.config.schema.Task) describes."""
    return task_class(config.name).from_config(config)


def from_params(params: Params) -> Task:
    """The task of the whole typed params (its `task:` section)."""
    return build(params.task)
