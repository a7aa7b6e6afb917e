"""params.yaml: its typed schema, loading and profiles.

  schema    Params and one section class per params.yaml section; check() -> typed, frozen Params
            (the one place a default lives)
  base      Section (strict, frozen, no unknown keys) and the shared number types
  task      the `task:` section (the knobs each task owns)
  loading   read params.yaml (and every YAML file a user writes: a key twice is an error), layer profiles/ on it
  preflight what a stage would refuse at its start, checked before `iwsft run` or a flow starts one
  control   the control pipeline's params (control/params.yaml)
"""
