import json
import math

from common.train.schedules import EarlyStopping, ReduceLROnPlateau, poly_lr, step_lr


def test_plateau_decays_only_after_patience_and_resumes_identically():
    values = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85]
    full = ReduceLROnPlateau(1e-3, factor=0.3, patience=2)
    lrs = [full.step(v) for v in values]
    # three bad epochs after 0.9 -> decay once; improvement at 0.8 resets the count
    assert lrs[:4] == [1e-3] * 4
    assert math.isclose(lrs[4], 3e-4)
    assert math.isclose(lrs[8], 9e-5) and math.isclose(lrs[7], 3e-4)

    first = ReduceLROnPlateau(1e-3, factor=0.3, patience=2)
    for v in values[:5]:
        first.step(v)
    second = ReduceLROnPlateau(1e-3, factor=0.3, patience=2)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [second.step(v) for v in values[5:]] == lrs[5:]


def test_plateau_respects_min_lr():
    s = ReduceLROnPlateau(1.0, factor=0.1, patience=0, min_lr=0.05)
    s.step(1.0)
    assert [s.step(1.0) for _ in range(3)] == [0.1, 0.05, 0.05]


def test_early_stopping():
    es = EarlyStopping(patience=2)
    assert es.step(1.0) == (True, False)
    assert es.step(1.1) == (False, False)
    assert es.step(0.5) == (True, False)
    assert es.step(0.6) == (False, False)
    assert es.step(0.7) == (False, True)
    assert EarlyStopping(patience=5).step(float("nan")) == (False, True)
    never = EarlyStopping(patience=0)
    never.step(1.0)
    assert all(not never.step(2.0)[1] for _ in range(10))


def test_step_and_poly():
    assert step_lr(0.1, 79, [80, 120]) == 0.1
    assert math.isclose(step_lr(0.1, 80, [80, 120]), 0.01)
    assert math.isclose(step_lr(0.1, 150, [80, 120]), 0.001)
    assert poly_lr(0.01, 0, 100) == 0.01
    assert math.isclose(poly_lr(0.01, 50, 100), 0.01 * 0.5 ** 0.9)
    assert poly_lr(0.01, 100, 100, min_lr=1e-4) == 1e-4
