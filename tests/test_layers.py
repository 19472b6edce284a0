"""Custom layers against Keras' own layers or a direct numpy computation, and their serialization."""

import functools

import keras
import numpy as np
import pytest

from hms_keras.layers import (
    CosineSimilarity,
    GeMPooling2D,
    PointwiseDense,
    Rematerialized,
    ShiftedDepthwiseConv2D,
    SlicedMaxPooling2D,
    SplitHemispheres,
    StackHemispheres,
    elu,
)


@pytest.mark.parametrize(
    "kernel_size, multiplier, use_bias",
    [((1, 3), 4, False), ((1, 5), 4, False), ((3, 1), 1, False), ((3, 3), 2, True), ((2, 4), 3, False)],
)
def test_shifted_depthwise_matches_keras_depthwise(kernel_size, multiplier, use_bias):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 10, 16, 5)).astype("float32")  # (batch, h, w, channels)
    reference = keras.layers.DepthwiseConv2D(
        kernel_size, depth_multiplier=multiplier, padding="same", use_bias=use_bias
    )
    shifted = ShiftedDepthwiseConv2D(kernel_size, depth_multiplier=multiplier, padding="same", use_bias=use_bias)
    expected = np.asarray(reference(x))
    shifted.build(x.shape)
    assert [w.shape for w in shifted.weights] == [w.shape for w in reference.weights]
    weights = [rng.standard_normal(w.shape).astype("float32") for w in reference.weights]
    reference.set_weights(weights)
    shifted.set_weights(weights)
    for training in (False, True):  # two layouts of the same sum
        np.testing.assert_allclose(
            np.asarray(shifted(x, training=training)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5
        )
    assert expected.shape == (2, 10, 16, 5 * multiplier)


def test_shifted_depthwise_channel_order_is_channel_major():
    # output channel c * multiplier + m is input channel c convolved with kernel[..., c, m]
    x = np.zeros((1, 1, 5, 2), "float32")
    x[0, 0, 2, 1] = 1.0  # an impulse in channel 1 at w = 2
    layer = ShiftedDepthwiseConv2D((1, 3), depth_multiplier=2, padding="same", use_bias=False)
    layer.build(x.shape)
    kernel = np.arange(12, dtype="float32").reshape(1, 3, 2, 2)
    layer.set_weights([kernel])
    y = np.asarray(layer(x))[0, 0]  # (w, 4)
    np.testing.assert_array_equal(y[:, :2], 0.0)
    # y[w, 2 + m] = sum_j kernel[0, j, 1, m] * x[w + j - 1]: the impulse lands at w = 3 - j
    np.testing.assert_array_equal(y[1:4, 2:], kernel[0, ::-1, 1, :])


def test_shifted_depthwise_rejects_unsupported_options():
    with pytest.raises(ValueError, match="padding='same'"):
        ShiftedDepthwiseConv2D(3, padding="valid")
    with pytest.raises(ValueError, match="stride 1"):
        ShiftedDepthwiseConv2D(3, padding="same", strides=2)


def test_elu_matches_keras_elu_with_gradient_one_at_zero():
    import jax

    x = np.array([-80.0, -3.0, -0.3, -1e-8, -0.0, 0.0, 1e-8, 0.5, 7.0], "float32")
    expected = np.asarray(keras.activations.elu(x))
    np.testing.assert_allclose(np.asarray(elu(x)), expected, rtol=0, atol=6e-8)
    assert (np.asarray(elu(x))[x > 0] == x[x > 0]).all()
    grad = np.asarray(jax.vmap(jax.grad(elu))(x))
    np.testing.assert_allclose(grad, np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))), rtol=1e-6, atol=1e-30)
    assert grad[5] == 1.0


@pytest.mark.parametrize("pool_size, width", [((1, 2), 16), ((2, 2), 9), ((1, 3), 7)])
def test_sliced_max_pooling_matches_keras(pool_size, width):
    x = np.random.default_rng(1).standard_normal((3, 4, width, 6)).astype("float32")
    expected = np.asarray(keras.layers.MaxPooling2D(pool_size)(x))
    np.testing.assert_array_equal(np.asarray(SlicedMaxPooling2D(pool_size)(x)), expected)


def test_gem_pooling_matches_numpy_and_has_one_weight():
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype("float32")
    layer = GeMPooling2D(p_init=3.0, epsilon=1e-4)
    y = np.asarray(layer(x))
    expected = np.mean(np.maximum(x, 1e-4) ** 3, axis=(1, 2)) ** (1 / 3)
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    assert [tuple(w.shape) for w in layer.trainable_weights] == [()]
    layer.p.assign(1.0)  # p = 1: the mean of the clipped inputs
    np.testing.assert_allclose(np.asarray(layer(x)), np.maximum(x, 1e-4).mean(axis=(1, 2)), rtol=1e-5)


def test_cosine_similarity_matches_pytorch_semantics():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4, 8)).astype("float32")
    b = rng.standard_normal((2, 3, 4, 8)).astype("float32")
    a[0, 0, 0] = 1e-6  # norm below eps: clipped to eps, as torch.nn.functional.cosine_similarity does
    b[0, 0, 0] = 0.0
    b[0, 0, 0, 0] = 1.0
    layer = CosineSimilarity(epsilon=1e-4)
    y = np.asarray(layer([a, b]))
    norm_a = np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-4)
    norm_b = np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-4)
    np.testing.assert_allclose(y, (a * b).sum(-1, keepdims=True) / (norm_a * norm_b), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y[0, 0, 0, 0], 1e-6 / 1e-4, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(layer([b, a])), y)


def test_stack_and_split_hemispheres_layout():
    rng = np.random.default_rng(4)
    signal = rng.standard_normal((3, 7, 6)).astype("float32")  # (batch, time, channels)
    mask = rng.standard_normal((3, 7, 6)).astype("float32")
    left, right = (0, 1, 4), (3, 2, 4)
    stacked = np.asarray(StackHemispheres(left, right)([signal, mask]))
    assert stacked.shape == (6, 3, 7, 2)  # (2 * batch, stack, time, planes)
    np.testing.assert_array_equal(stacked[:3, :, :, 0], signal[:, :, list(left)].transpose(0, 2, 1))
    np.testing.assert_array_equal(stacked[3:, :, :, 1], mask[:, :, list(right)].transpose(0, 2, 1))
    out_left, out_right = SplitHemispheres()(stacked)
    np.testing.assert_array_equal(np.asarray(out_left), stacked[:3])
    np.testing.assert_array_equal(np.asarray(out_right), stacked[3:])
    with pytest.raises(ValueError, match="differ in size"):
        StackHemispheres((0, 1), (2,))


def _small_block(seed, shape=(4, 3)):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = keras.layers.Dense(5)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    return keras.Model(inputs, keras.layers.Activation(elu)(x))


def test_pointwise_dense_matches_dense_with_its_gradients():
    import jax

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 6, 5)).astype("float32")  # (batch, h, w, features)
    reference = keras.layers.Dense(7, activation="elu")
    pointwise = PointwiseDense(7, activation="elu")
    reference.build(x.shape)
    pointwise.build(x.shape)
    weights = [rng.standard_normal(w.shape).astype("float32") for w in reference.weights]
    reference.set_weights(weights)
    pointwise.set_weights(weights)
    assert [w.shape for w in pointwise.weights] == [(5, 7), (7,)]

    def loss(layer, variables):
        outputs, _ = layer.stateless_call(variables, [], x)
        return (outputs**2).sum()

    expected_y = np.asarray(reference(x))
    assert expected_y.shape == (3, 4, 6, 7)
    np.testing.assert_allclose(np.asarray(pointwise(x)), expected_y, rtol=1e-5, atol=1e-6)
    expected_grads = jax.grad(lambda v: loss(reference, v))([w.value for w in reference.trainable_variables])
    grads = jax.grad(lambda v: loss(pointwise, v))([w.value for w in pointwise.trainable_variables])
    for grad, expected in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-4, atol=1e-4)


def test_rematerialized_block_trains_like_the_plain_block():
    x = np.random.default_rng(5).standard_normal((6, 4, 3)).astype("float32")
    y = np.random.default_rng(6).standard_normal((6, 4, 5)).astype("float32")
    models = []
    for remat in (False, True):
        block = _small_block(seed=7)
        inputs = keras.Input((4, 3))
        outputs = Rematerialized(block)(inputs) if remat else block(inputs)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        for _ in range(3):
            model.train_on_batch(x, y)
        models.append(model)
    plain, remat = models
    assert len(remat.weights) == len(plain.weights) == 6  # kernel, bias, gamma, beta, moving mean, variance
    for w_plain, w_remat in zip(plain.weights, remat.weights, strict=True):
        np.testing.assert_allclose(np.asarray(w_remat), np.asarray(w_plain), rtol=1e-5, atol=1e-6)
    moving_mean = next(w for w in remat.weights if "moving_mean" in w.path)
    assert np.abs(np.asarray(moving_mean)).max() > 0  # the batch-norm updates reached the variables


def test_rematerialized_keeps_only_matmul_and_reduction_outputs_on_jax(capsys):
    from jax.ad_checkpoint import print_saved_residuals

    layer = Rematerialized(_small_block(seed=9))
    layer.build((None, 4, 3))
    x = np.random.default_rng(9).standard_normal((6, 4, 3)).astype("float32")
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        outputs, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
        return outputs.sum()

    print_saved_residuals(loss, [v.value for v in layer.trainable_variables], x)
    computed = [line for line in capsys.readouterr().out.splitlines() if "output of" in line]
    assert any("output of dot_general" in line for line in computed)  # the Dense output is kept
    assert any("output of reduce_sum" in line for line in computed)  # so are the batch statistics
    # nothing elementwise (batch-norm arithmetic, ELU) is kept: it is recomputed
    assert all(("dot_general" in line or "reduce_sum" in line or "'_var'" in line) for line in computed), computed


def test_layers_round_trip_through_a_keras_file(tmp_path):
    signal = keras.Input((8, 4), name="signal")
    mask = keras.Input((8, 4), name="mask")
    x = StackHemispheres((0, 1), (3, 2), name="stack")([signal, mask])  # (2b, 2, 8, 2)
    x = ShiftedDepthwiseConv2D((1, 3), depth_multiplier=2, padding="same", name="dw")(x)  # (2b, 2, 8, 4)
    x = SlicedMaxPooling2D((1, 2), name="pool")(x)  # (2b, 2, 4, 4)
    x = PointwiseDense(4, name="pointwise")(x)  # (2b, 2, 4, 4)
    x = keras.layers.Reshape((8, 4))(x)
    x = Rematerialized(_small_block(seed=8, shape=(8, 4)), name="remat")(x)  # (2b, 8, 5)
    left, right = SplitHemispheres(name="split")(keras.layers.Reshape((8, 1, 5))(x))  # (b, 8, 1, 5) each
    x = CosineSimilarity(name="cosine")([left, right])  # (b, 8, 1, 1)
    x = GeMPooling2D(name="gem")(x)  # (b, 1)
    model = keras.Model({"signal": signal, "mask": mask}, x)
    data = {k: np.random.default_rng(9).uniform(0.1, 1, (2, 8, 4)).astype("float32") for k in ("signal", "mask")}
    expected = np.asarray(model(data))
    model.save(tmp_path / "layers.keras")
    loaded = keras.models.load_model(tmp_path / "layers.keras")
    np.testing.assert_allclose(np.asarray(loaded(data)), expected, rtol=1e-6)


def test_layers_use_keras_implementations_off_cpu(monkeypatch):
    # on a GPU (here: the platform `hms_keras.runtime` sees, patched) every layer is its Keras counterpart
    from hms_keras import runtime

    monkeypatch.setattr(runtime, "_device_platform", lambda backend: "gpu")
    calls = []

    def spy(owner, name):
        original = getattr(owner, name)

        @functools.wraps(original)  # Keras reads `call`'s signature
        def wrapped(*args, **kwargs):
            calls.append((name, type(args[0]).__name__, getattr(args[1], "shape", None) if len(args) > 1 else None))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 8, 4)).astype("float32")  # (batch, h, w, channels)
    depthwise = ShiftedDepthwiseConv2D((1, 3), depth_multiplier=2, padding="same")
    reference = keras.layers.DepthwiseConv2D((1, 3), depth_multiplier=2, padding="same")
    depthwise.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(depthwise.get_weights())
    spy(keras.layers.DepthwiseConv2D, "call")
    spy(keras.layers.MaxPooling2D, "call")
    spy(keras.layers.Dense, "call")
    spy(keras.ops, "elu")
    spy(keras, "remat")
    for training in (False, True):
        np.testing.assert_array_equal(np.asarray(depthwise(x, training=training)), np.asarray(reference(x)))
    pooled = np.asarray(SlicedMaxPooling2D((1, 2))(x))
    np.testing.assert_array_equal(pooled, np.asarray(keras.layers.MaxPooling2D((1, 2))(x)))
    pointwise = PointwiseDense(3)
    y = np.asarray(pointwise(x))  # (2, 3, 8, 3 units)
    kernel, bias = np.asarray(pointwise.kernel), np.asarray(pointwise.bias)  # (4 channels, 3 units), (3,): unseeded
    # two float32 sums of 4 products (+ bias) in any order differ by at most 4 eps (sum_i |x_i w_i| + |b|)
    # (Higham's bound, twice); a relative tolerance alone fails on outputs near 0 from larger terms
    rounding_bound = 4 * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(kernel) + np.abs(bias))
    assert np.all(np.abs(y - (x @ kernel + bias)) <= rounding_bound)
    np.testing.assert_array_equal(np.asarray(elu(x)), np.asarray(keras.activations.elu(x)))
    block = _small_block(seed=12, shape=(8, 4))
    np.testing.assert_allclose(np.asarray(Rematerialized(block)(x[0])), np.asarray(block(x[0])), rtol=1e-6)
    assert ("call", "ShiftedDepthwiseConv2D", x.shape) in [(n, t, tuple(s or ())) for n, t, s in calls]
    assert ("call", "SlicedMaxPooling2D", x.shape) in [(n, t, tuple(s or ())) for n, t, s in calls]
    assert ("call", "PointwiseDense", x.shape) in [(n, t, tuple(s or ())) for n, t, s in calls]  # 4-D, not flat
    assert any(name == "elu" for name, _, _ in calls)
    assert any(name == "remat" for name, _, _ in calls)
