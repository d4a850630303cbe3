"""The named random streams of a run: every random draw is a function of (seed, stream, step).

Two kinds, each a table of fixed numbers (changing one changes results):

* episode streams (numpy, host): ``episode_rng(seed, step, EPISODES[name])`` draws the
  tasks (or pairs) of one step, and its children ``spawn(n)[i]`` the episode (or
  augmentation) of slot (row) i, so that each process samples only its own;
* key streams (JAX): ``fold_in(PRNGKey(seed), KEYS[name] + index)`` is the dropout key of
  a phase (then folded with the step) or of the index-th test task.

Query dropout inside an estimator folds ``QUERY_DROPOUT`` into the task's key.
"""
import jax
import numpy as np

from bil_jax.data import episodes

EPISODES = {
    "pretrain": 1,  # pre-training batches (step)
    "meta": 2,  # meta-training meta-batches (step)
    "heldout": 3,  # the fixed held-out probe of both phases (step 0)
    "eval": 4,  # evaluation episodes (step = test task index)
    "aux": 5,  # Aux fine-tuning meta-batches (step = aux_step(task, step))
    "xplus": 6,  # X+ training batches (step)
    "aux_random": 7,  # the random training tasks of the Aux ablation (step = test task)
}
KEYS = {
    "pretrain": 11,  # pre-training dropout, folded with the step
    "meta": 12,  # meta-training task keys, folded with the step
    "heldout": 14,  # held-out probe of meta-training
    "xplus": 15,  # X+ training dropout, folded with the step
    "aux": 1000,  # + test task index: Aux fine-tuning task keys
    "eval": 2_000_000,  # + test task index: IS adaptation at evaluation
}
AUX_STEPS_PER_TASK = 100_003  # aux episode step = task index * this + Aux step
# fold_in tag of a task's key for its query-set dropout, disjoint from the inner steps'
# fold_in(rng, k) (k < K).
QUERY_DROPOUT = 2 ** 20
# Validation task v draws from the 'eval' and 'aux' streams with index VAL_TASK_OFFSET + v
# (test task t with index t), so tuning on validation leaves the test draws unchanged.
VAL_TASK_OFFSET = 1_000_000


def episode_rng(seed: int, name: str, step: int) -> np.random.Generator:
  """The numpy Generator of episode stream ``name`` at ``step``."""
  return episodes.episode_rng(seed, step, EPISODES[name])


def key(seed: int, name: str, index: int = 0) -> jax.Array:
  """The JAX key of key stream ``name`` (``index``: the test task, for 'aux' and 'eval')."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), KEYS[name] + index)


def aux_step(task_index: int, step: int) -> int:
  """The 'aux' episode step of Aux fine-tuning step ``step`` for test task ``task_index``."""
  return task_index * AUX_STEPS_PER_TASK + step
