"""The control flow plans control/dvc.yaml's stages in DVC's order; the language flows never see them."""

from flows import control, dag


def test_control_plan_follows_dvc_order():
    order = control.plan()
    names = [stage.split(":")[-1] for stage in order]
    assert all(stage.startswith("control/dvc.yaml:") for stage in order)
    for before, after in [("data", "curate"), ("curate", "quality"), ("quality", "reference"), ("reference", "train@iwsftq"),
                          ("train@iwsftq", "evaluate@iwsftq"), ("evaluate@iwsftq", "report"), ("evaluate@bc", "register")]:
        assert names.index(before) < names.index(after)
    assert [s.split(":")[-1] for s in control.plan(target="quality")] == ["data", "curate", "quality"]


def test_the_language_pipeline_plan_has_no_control_stage():
    assert not [stage for stage in dag.load_dag(control.ROOT).order if stage.startswith("control/")]
