"""TorchAdamW and OneCycleFromPeak against direct numpy transcriptions of the PyTorch formulas."""

import math

import keras
import numpy as np
import pytest

from hms_keras.optimizers import OneCycleFromPeak, TorchAdamW


def torch_adamw_reference(w, grads, lr, beta_1, beta_2, eps, weight_decay):
    """torch.optim.AdamW, one parameter tensor, written out in numpy."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w * (1 - lr * weight_decay)
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        m_hat = m / (1 - beta_1**t)
        v_hat = v / (1 - beta_2**t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return w


def test_torch_adamw_matches_pytorch_formula_with_large_epsilon():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,)).astype("float64")
    # Small gradients make epsilon matter: this is where Keras' own AdamW differs.
    grads = [rng.normal(scale=1e-4, size=(5,)) for _ in range(6)]
    expected = torch_adamw_reference(w0, grads, 1e-3, 0.9, 0.999, 1e-4, 1e-5)

    variable = keras.Variable(w0.astype("float32"))
    optimizer = TorchAdamW(learning_rate=1e-3, weight_decay=1e-5, epsilon=1e-4)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g.astype("float32")), variable)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), expected, rtol=1e-5, atol=1e-7)

    keras_variable = keras.Variable(w0.astype("float32"))
    keras_optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-5, epsilon=1e-4)
    for g in grads:
        keras_optimizer.apply_gradients([(keras.ops.convert_to_tensor(g.astype("float32")), keras_variable)])
    # The stock optimizer is measurably different, which is why TorchAdamW exists.
    assert np.max(np.abs(keras.ops.convert_to_numpy(keras_variable) - expected)) > 1e-5


def test_torch_adamw_round_trips_through_config():
    optimizer = TorchAdamW(learning_rate=1e-3, weight_decay=1e-5, epsilon=1e-4)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, TorchAdamW)
    assert restored.epsilon == pytest.approx(1e-4)


def test_one_cycle_from_peak_matches_torch_phase_arithmetic():
    total, max_lr, div, final_div = 40, 1e-3, 25.0, 0.4
    schedule = OneCycleFromPeak(max_lr, total, div, final_div)
    min_lr = max_lr / div / final_div
    for step in (0, 1, 17, total - 1):
        pct = (step + 1) / total  # torch: (step - start_step) / (end_step - start_step), start -1
        expected = min_lr + (max_lr - min_lr) / 2 * (1 + math.cos(math.pi * pct))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5)
    assert float(schedule(total - 1)) == pytest.approx(1e-4, rel=1e-5)
    restored = OneCycleFromPeak.from_config(schedule.get_config())
    assert float(restored(5)) == pytest.approx(float(schedule(5)))
