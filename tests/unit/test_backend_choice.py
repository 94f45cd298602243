"""The backend chooser's rules, without models: it never keeps a slower or a less accurate path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsql.errors import ConfigError
from clipsql.models import backends, calibrate, machine, text_choice
from clipsql.models.device import resolve_precision
from clipsql.models.onnx_export import ACCURACY_BAR

NAMES = ["torch-bf16", "torch-int8", "onnx-fp32", "onnx-int8"]


@settings(max_examples=300, deadline=None)
@given(base=st.floats(0.1, 1000),
       others=st.dictionaries(st.sampled_from(NAMES),
                              st.tuples(st.floats(0.01, 5000), st.floats(0.9, 1.0)), max_size=4))
def test_the_choice_is_never_slower_nor_less_accurate_than_fp32(base, others):
    rates = {"torch-fp32": base, **{n: r for n, (r, _) in others.items()}}
    cos = {"torch-fp32": 1.0, **{n: c for n, (_, c) in others.items()}}
    chosen, reason = calibrate.decide(rates, cos)
    assert rates[chosen] >= base
    if chosen != "torch-fp32":
        assert cos[chosen] >= ACCURACY_BAR
        assert rates[chosen] >= base * calibrate.MARGIN
        # and no other accurate candidate was faster
        assert all(rates[n] <= rates[chosen] for n in rates if cos[n] >= ACCURACY_BAR)
    assert reason


def test_a_fast_but_inaccurate_path_loses_to_fp32():
    chosen, reason = calibrate.decide({"torch-fp32": 10.0, "onnx-int8": 30.0},
                                      {"onnx-int8": ACCURACY_BAR - 1e-4})
    assert chosen == "torch-fp32" and "no other path" in reason


def test_a_path_within_the_noise_margin_does_not_replace_fp32():
    chosen, _ = calibrate.decide({"torch-fp32": 10.0, "torch-int8": 10.5}, {"torch-int8": 1.0})
    assert chosen == "torch-fp32"


def test_bf16_is_measured_only_where_the_cpu_has_it():
    assert "torch-bf16" not in backends.cpu_candidates({"avx2", "fma"})
    assert "torch-bf16" in backends.cpu_candidates({"avx2", "avx512_bf16"})
    assert "torch-bf16" in backends.cpu_candidates({"amx_bf16"})
    assert backends.cpu_candidates(set(), onnx=True)[-2:] == ["onnx-fp32", "onnx-int8"]
    assert backends.cpu_candidates(set())[0] == backends.BASELINE


@pytest.mark.parametrize("precision", ["int8", "onnx-fp32", "onnx-int8"])
def test_cpu_only_precisions_are_refused_on_a_gpu(precision):
    with pytest.raises(ConfigError, match="CPU"):
        resolve_precision(precision, "cuda")
    assert resolve_precision(precision, "cpu") == "fp32"  # they start from fp32 weights


def test_every_precision_names_a_backend():
    from clipsql.config import PRECISIONS

    assert {backends.backend_for(p) for p in PRECISIONS if p != "auto"} == set(backends.BACKENDS)


def test_text_engines_need_a_real_margin_over_numpy():
    assert text_choice.faster({"numpy": 0.02, "onnx-fp32": 0.019}) == "numpy"
    assert text_choice.faster({"numpy": 0.02, "onnx-fp32": 0.01, "onnx-int8": 0.012}) == "onnx-fp32"


def test_the_machine_description_names_the_cpu_and_its_features():
    info = machine.describe()
    assert info["cpu"] and info["logical_cpus"] >= 1
    assert set(info["features"]) <= set(machine.FEATURES)
    assert "torch" in info["versions"]
    line = machine.one_line()
    assert info["cpu"] in line and "torch" in line
    assert machine.fingerprint() == machine.fingerprint() and len(machine.fingerprint()) == 16


def test_sample_images_are_deterministic_and_varied():
    import numpy as np

    a = [np.asarray(i) for i in calibrate.sample_images(64, 4)]
    b = [np.asarray(i) for i in calibrate.sample_images(64, 4)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 4 and a[0].shape == (64, 96, 3)


@settings(max_examples=300, deadline=None)
@given(base=st.floats(0.1, 1000), images=st.integers(1, 10_000_000),
       others=st.dictionaries(st.sampled_from(NAMES),
                              st.tuples(st.floats(0.01, 5000), st.floats(0.9, 1.0)), max_size=4),
       parts=st.dictionaries(st.sampled_from(["torch_import", "torch_build", "onnx_import"]),
                             st.floats(0, 60)),
       prepare=st.dictionaries(st.sampled_from(NAMES), st.floats(0, 10)),
       done=st.sets(st.sampled_from(["torch_import", "torch_build", "onnx_import"])))
def test_a_planned_load_keeps_the_rules_and_finishes_first(base, images, others, parts, prepare,
                                                           done):
    parts = {**parts, "prepare": prepare}
    rates = {"torch-fp32": base, **{n: r for n, (r, _) in others.items()}}
    cos = {"torch-fp32": 1.0, **{n: c for n, (_, c) in others.items()}}
    stored, reason = calibrate.decide(rates, cos)
    choice = calibrate.Choice(stored, reason, rates, cos, startup=parts)
    chosen, why = calibrate.for_workload(choice, images, done)
    # still never a path slower per image than fp32, nor a less accurate one
    assert chosen in calibrate.admissible(rates, cos)
    assert rates[chosen] >= base and cos[chosen] >= (1.0 if chosen == "torch-fp32" else ACCURACY_BAR)

    def total(name):
        return calibrate.startup_of(name, parts, done) + images / rates[name]

    assert total(chosen) <= min(total(n) for n in calibrate.admissible(rates, cos)) + 1e-9
    assert total(chosen) <= total(stored) + 1e-9
    assert why == reason if chosen == stored else f"{images} images: {chosen}" in why


def test_without_a_planned_count_or_start_up_costs_the_stored_choice_stands():
    choice = calibrate.Choice("torch-bf16", "why", {"torch-fp32": 9.0, "torch-bf16": 26.0,
                                                     "onnx-int8": 20.0},
                              {"torch-bf16": 1.0, "onnx-int8": 1.0})
    assert calibrate.for_workload(choice, 10) == ("torch-bf16", "why")  # no start-up costs
    choice.startup = {"torch_import": 4.0, "torch_build": 1.0, "prepare": {"onnx-int8": 0.3}}
    assert calibrate.for_workload(choice, None) == ("torch-bf16", "why")
    small, why = calibrate.for_workload(choice, 100)
    assert small == "onnx-int8" and why.startswith("100 images: onnx-int8") and "5.0 s to start" in why
    # break-even: 4.7 s of start-up saved = n (1/20 - 1/26) s lost, n ~ 407
    assert calibrate.for_workload(choice, 380)[0] == "onnx-int8"
    assert calibrate.for_workload(choice, 440)[0] == "torch-bf16"


def test_a_loaded_model_answers_text_through_the_tower_only_with_an_onnx_engine():
    class Engine:
        int8 = True

    class Tower:
        engine = None

    tower = Tower()
    assert text_choice.answering(None, loaded=False, exact=False) is None
    assert text_choice.answering(tower, loaded=False, exact=True) is tower  # no torch yet
    assert text_choice.answering(tower, loaded=True, exact=False) is None   # numpy < torch
    tower.engine = Engine()
    assert text_choice.answering(tower, loaded=True, exact=False) is tower
    assert text_choice.answering(tower, loaded=True, exact=True) is None    # stored: no int8
    tower.engine.int8 = False
    assert text_choice.answering(tower, loaded=True, exact=True) is tower
