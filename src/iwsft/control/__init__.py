"""Continuous control: the paper's second domain (arXiv 2507.12856 §4.2; PAPER.md §5).

BC, BC 10%, SFT(Q) and iw-SFT(Q) on offline datasets of continuous-control episodes, run by
control/dvc.yaml through `iwsft control <stage>` beside the language pipeline.

A dataset (yours or generated) is one .npz file, Minari-like, one row per transition in episode order:

  observations  float [N, obs_dim]   the state the action was taken in (finite)
  actions       float [N, act_dim]   the executed action, in the env's own units (within its bounds)
  rewards       float [N]            the reward of that transition (finite)
  terminations  bool  [N]            the episode ended in a terminal state after this transition
  truncations   bool  [N]            the episode was cut (time limit) after this transition

An episode is the run of rows up to and including a row with terminations or truncations set; the
last row must end an episode. Check a file with `iwsft control validate FILE --env ENV`.

Modules, one concern each: envs (specs, action scaling, rollouts), scripted (noisy-controller
data), sac (a compact SAC whose replay buffer is the HalfCheetah data), dataset (npz I/O and the
checks naming file, array and index), gates (the GX suites at each boundary, registered with
iwsft.gates), policy (tanh-Gaussian MLP), losses (BC / SFT(Q) / iw-SFT(Q) on top of
iwsft.training.objectives), training (the four methods' loops), scores (the normalised score),
parallel (worker processes), registry (policies into MLflow through iwsft.tracking.registry), and
stages/ (one module per control/dvc.yaml stage: data, curate, quality, reference, train, evaluate,
report, register). Shared with the language pipeline: the methods (iwsft.methods.CONTROL_METHODS),
the params conventions (iwsft.config.control), the statistics (iwsft.evaluation.stats), the
promotion rule (iwsft.tracking.promotion) and the gate runner (iwsft.gates). The CLI is iwsft.cli.control.
"""
