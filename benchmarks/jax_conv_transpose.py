"""Why the paper's CNN trains slowly on JAX on a CPU: the transposed convolution.

Times, side by side in one JAX process, forward and forward+backward of the
layers of the paper's CNN decoder/encoder at batch 64:

- `lax.conv_transpose` stride 2, 3x3, SAME (what `keras.layers.Conv2DTranspose`
  runs on JAX: a convolution with `lhs_dilation`);
- a strided `Conv2D` of the encoder (3x3, stride 2, SAME), for comparison;
- the same transposed convolution written sub-pixel: a stride-1 2x2 convolution
  to 4 x C_out channels on the (padded) undilated input, whose outputs are the
  four phases of the stride-2 output (16/9 of the useful FLOPs, no dilation).

GFLOP/s counts the useful multiply-adds (a direct implementation's), forward
+ backward = 3x forward; NumPy's float32 matmul in the same process is the
yardstick.

    KERAS_BACKEND=jax python benchmarks/jax_conv_transpose.py [--repeats 3]
"""

import argparse
import time

import numpy as np

BATCH = 64
# (input H=W, C_in, C_out) of the decoder's transposed convolutions on CIFAR-10.
DECODER = ((2, 512, 512), (4, 512, 256), (8, 256, 128))


def timed(fn, args, repeats):
    import jax

    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def numpy_flops(size=1024, repeats=10):
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from jax import lax

    dims = ("NHWC", "HWIO", "NHWC")
    key = jax.random.PRNGKey(0)

    def transposed(x, w):
        return lax.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=dims)

    def subpixel(x, w4):
        return lax.conv_general_dilated(x, w4, (1, 1), "VALID", dimension_numbers=dims)

    def strided(x, w):
        return lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dims)

    def grad_of(f):
        return jax.jit(jax.grad(lambda w, x: f(x, w).sum(), argnums=(0, 1)))

    peak = numpy_flops()
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}, batch {BATCH}; "
          f"NumPy fp32 matmul {peak / 1e9:.1f} GFLOP/s")
    print(f"{'layer':<34} {'fwd ms':>8} {'fwd+bwd ms':>11} {'GFLOP/s':>8} {'% numpy':>8}")
    total = {"transposed": 0.0, "subpixel": 0.0}
    for size, c_in, c_out in DECODER:
        x = jax.random.normal(key, (BATCH, size, size, c_in))
        w = jax.random.normal(key, (3, 3, c_in, c_out)) * 0.02
        xp = jax.random.normal(key, (BATCH, size + 1, size + 1, c_in))
        w4 = jax.random.normal(key, (2, 2, c_in, 4 * c_out)) * 0.02
        useful = 2 * BATCH * size * size * 9 * c_in * c_out  # forward FLOPs
        for name, f, a in (("transposed", transposed, (x, w)), ("subpixel", subpixel, (xp, w4))):
            fwd = timed(jax.jit(f), a, args.repeats)
            both = timed(grad_of(f), (a[1], a[0]), args.repeats) + fwd
            total[name] += both
            label = f"{name} {size}->{2 * size} {c_in}->{c_out}"
            print(f"{label:<34} {fwd * 1e3:>8.1f} {both * 1e3:>11.1f} "
                  f"{3 * useful / both / 1e9:>8.1f} {100 * 3 * useful / both / peak:>7.1f}%")
    x = jax.random.normal(key, (BATCH, 16, 16, 64))
    w = jax.random.normal(key, (3, 3, 64, 128)) * 0.02
    useful = 2 * BATCH * 8 * 8 * 9 * 64 * 128
    fwd = timed(jax.jit(strided), (x, w), args.repeats)
    both = timed(grad_of(strided), (w, x), args.repeats) + fwd
    print(f"{'strided conv 16->8 64->128':<34} {fwd * 1e3:>8.1f} {both * 1e3:>11.1f} "
          f"{3 * useful / both / 1e9:>8.1f} {100 * 3 * useful / both / peak:>7.1f}%")
    print(f"\ndecoder transposed convolutions, forward+backward: lax.conv_transpose "
          f"{total['transposed'] * 1e3:.0f} ms, sub-pixel {total['subpixel'] * 1e3:.0f} ms "
          f"({total['transposed'] / total['subpixel']:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
