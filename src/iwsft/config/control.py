"""control/params.yaml's schema (the continuous-control pipeline, control/dvc.yaml): every key, its
type and its range, checked once when a control stage starts; the conventions of
iwsft.config.schema (strict types, unknown keys are errors, frozen, every default declared here once).

`load(path)` returns the typed ControlParams or raises UserError naming every bad value at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from iwsft.config.base import Count, Fraction, Percentiles, Positive, PositiveFloat, Section, validated



class ScriptedSource(Section):
    """A scripted controller with per-episode Gaussian action noise, one level after another."""
    source: Literal["scripted"]
    # a level is a standard deviation in [-1, 1] action units, or "random"; ints stay ints (as written)
    noise: list[Annotated[int, Field(ge=0)] | Annotated[float, Field(ge=0)] | Literal["random"]] = Field(min_length=1)
    episodes_per_level: Positive
    seed: Count


class SacSource(Section):
    """The whole replay buffer of a compact SAC run (iwsft.control.sac), D4RL medium-replay-like."""
    source: Literal["sac"]
    steps: Positive
    random_steps: Count = 5000  # uniform-random actions before the actor takes over
    hidden: Positive = 128
    batch: Positive = 256
    seed: Count = 0


class FileSource(Section):
    """A user's own dataset (`iwsft control validate FILE --env ENV` checks it first)."""
    source: Literal["file"]
    path: Annotated[str, Field(min_length=1)]


EnvSource = Annotated[Union[ScriptedSource, SacSource, FileSource], Field(discriminator="source")]


class Curate(Section):
    # ints stay ints: they are written into data/curated/summary.json and its bin names (">=p90")
    percentiles: Percentiles


class BehaviourCloning(Section):
    """pi_ref (= BC on all data) and BC 10% (iwsft.control.training.behaviour_cloning)."""
    steps: Positive
    batch: Positive        # (episode, timestep) pairs per step, episodes drawn uniformly
    lr: PositiveFloat
    hidden: Positive
    depth: Positive
    log_every: Positive


class FineTune(Section):
    """SFT(Q) and iw-SFT(Q), from pi_ref (iwsft.control.training.fine_tune)."""
    steps: Positive
    lr: PositiveFloat
    warmup: Count          # linear warmup steps, then cosine to 0
    episodes: Positive     # episodes per batch, drawn ~ multiplicity
    timesteps: Positive    # timesteps per episode in a batch
    temp: PositiveFloat    # the weights' temperature on the mean log-ratio
    w_max: PositiveFloat   # the raw weights' clamp
    ema_decay: Fraction    # q = an EMA of the policy
    log_every: Positive


class Evaluate(Section):
    episodes: Positive     # deterministic (mean action) episodes, env seeds seed..seed+episodes-1
    seed: Count


class Gates(Section):
    min_episodes: Positive = 10   # the transitions gate: at least this many episodes per dataset


class Register(Section):
    """The register stage (iwsft.control.stages.register): MLflow experiment, registered-model names, promotion rule."""
    experiment: str = "iwsft-control"
    model_prefix: str = "iwsft-control"   # registered model `<model_prefix>-<env>`
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    margin: Annotated[float, Field(ge=0)] = 0.0   # in normalised-score points


with warnings.catch_warnings():
    # `register` is also the name of a method of the models' metaclass (abc's); an instance's
    # `params.register` is the field all the same, so pydantic's warning about it is noise
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class ControlParams(Section):
        envs: dict[str, EnvSource] = Field(min_length=1)   # in the order the stages run and report them
        seeds: list[Count] = Field(min_length=1)           # training seeds; the first one's policies are registered
        workers: Positive                                  # processes of one torch thread each
        curate: Curate
        bc: BehaviourCloning
        finetune: FineTune
        evaluate: Evaluate
        gates: Gates = Gates()
        register: Register = Register()


def check(params: dict, source: str = "params.yaml") -> ControlParams:
    """The typed, frozen ControlParams if every value is valid; else UserError naming every bad one."""
    return validated(ControlParams, params, source)


def load(path: str | Path = "params.yaml") -> ControlParams:
    """control/params.yaml (control's stages run in control/, beside it), checked."""
    from iwsft.config.loading import read_yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run control's stages in control/, where params.yaml is)")
    return check(read_yaml(path), str(path))
