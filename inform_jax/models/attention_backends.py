"""Which attention backend runs a self-attention call: `model.attention_impl`, the shape, dtype and platform.

    auto     the platform's fastest that can run the shape: cuDNN flash attention on GPU, Pallas splash
             attention on TPU, `blocked` on the CPU; where the fused kernel cannot run, the float32 einsum,
             with the reason logged once per shape
    cudnn    `jax.nn.dot_product_attention(implementation="cudnn")`; raises where it cannot run
    splash   Pallas splash attention (`inform_jax.models.splash`); raises where it cannot run; off a TPU it
             runs in Pallas' interpret mode (slow: for tests)
    blocked  float32 einsum over blocks of queries, skipping the fully masked (upper-triangle) blocks
    einsum   float32 einsum over the whole [T, T] square (transformers' eager attention)
    jax      `jax.nn.dot_product_attention` with its default implementation (XLA)

The choice is made while tracing, so it costs nothing at run time and is fixed per compiled shape.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading

import jax
import jax.numpy as jnp

logger = logging.getLogger(__name__)

ATTENTION_IMPLS = ("auto", "cudnn", "splash", "blocked", "einsum", "jax")
# Query rows per block of `blocked` (`cpu_block`): measured on 2 CPU cores, forward and backward, 8 heads of 64:
# at 16 x 256 tokens 64 beat 32 and 128 (69 vs 85 and 85 ms; 118 ms for the whole square), at 4 x 1024 128 beat
# 64 and 256 (209 vs 228 and 230 ms; 354 for the square).
CPU_BLOCK = 64


def cpu_block(length: int) -> int:
    """Query rows per block of `blocked` attention at sequence length T: 64, or T / 8 for long rows."""
    return max(CPU_BLOCK, length // 8)


_state = threading.local()
_logged: set = set()


@contextlib.contextmanager
def rows_padded_on_the_right():
    """Declare, while tracing, that every row's real tokens come first (right padding or none).

    cuDNN's padded causal mode takes each row's length, so it can run only such rows; left-padded rows (PPO
    prompts) take another backend. Enter this inside the traced function (e.g. a train step's loss), never
    around a call of an already jitted one: the choice is made at trace time and a cached trace would not see it.
    """
    previous = getattr(_state, "right_padded", False)
    _state.right_padded = True
    try:
        yield
    finally:
        _state.right_padded = previous


# Splash attention's smallest block: sequence lengths must be multiples of it.
SPLASH_BLOCK = 128


def kernel_bucket_multiple(multiple: int, platform: str, impl: str = "auto") -> int:
    """The multiple bucket lengths are rounded to (`data.bucket_multiple`), raised on a TPU to a multiple of
    `SPLASH_BLOCK` where attention may take the splash kernel, so that bucketed batches do not fall back to the
    einsum for want of 128-aligned lengths."""
    if platform == "tpu" and impl in ("auto", "splash"):
        return math.lcm(multiple, SPLASH_BLOCK)
    return multiple


def rows_right_padded() -> bool:
    return getattr(_state, "right_padded", False)


def current_platform() -> str:
    """The platform of the mesh in context (`jax.set_mesh`; a TPU topology when planning ahead of time on a CPU
    machine), else JAX's default backend: "cpu", "gpu" or "tpu"."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.abstract_device is not None:
        platform = mesh.abstract_device.platform
    else:
        platform = jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm", "gpu") else platform  # AMD GPUs are told apart by device kind


def cudnn_unsupported_reason(
    q_shape, k_shape, dtype, *, windowed: bool, right_padded: bool, platform: str, device_kind: str = ""
) -> str | None:
    """None where cuDNN flash attention can run this self-attention, else why not.

    q_shape [B, T, Hq, D], k_shape [B, T, Hkv, D]. cuDNN's limits (as `jax.nn.dot_product_attention` documents
    them): 16-bit floats only; head dim a multiple of 8, at most 128 (256 on Hopper); padding only as per-row
    lengths, i.e. right padding.
    """
    head_dim = q_shape[-1]
    if platform != "gpu" or any(amd in device_kind for amd in ("AMD", "Instinct", "Radeon")):
        return f"cuDNN runs on NVIDIA GPUs, not on {device_kind or platform}"
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"cuDNN flash attention takes bfloat16 or float16, not {jnp.dtype(dtype).name}"
    max_dim = 256 if any(h in device_kind for h in ("H100", "H200", "H800", "GH200")) else 128
    if head_dim % 8 or head_dim > max_dim:
        return f"head dim {head_dim} is not a multiple of 8 at most {max_dim}"
    if windowed:
        return "the model has per-layer sliding windows"
    if not right_padded:
        return "rows are not known to be right-padded (cuDNN takes padding as per-row lengths)"
    return None


def splash_reason(q_shape, k_shape, dtype, *, windowed: bool) -> str | None:
    """None where Pallas splash attention can run this self-attention, else why not."""
    if windowed:
        return "the model has per-layer sliding windows"
    try:
        from inform_jax.models.splash import splash_unsupported_reason
    except ImportError as e:  # the kernel ships with jax.experimental.pallas; say so if this jax lacks it
        return f"splash attention is not available ({e})"
    return splash_unsupported_reason(tuple(q_shape), tuple(k_shape), dtype)


def choose_backend(
    impl: str,
    q_shape,
    k_shape,
    dtype,
    *,
    windowed: bool = False,
    right_padded: bool = False,
    platform: str = "cpu",
    device_kind: str | None = None,
) -> str:
    """The backend that runs self-attention of q_shape [B, T, Hq, D] over k_shape [B, T, Hkv, D]: one of
    "cudnn", "splash", "blocked", "einsum", "jax". An explicit fused `impl` that cannot run raises ValueError
    saying why; "auto" falls back to "einsum" and logs why, once per shape."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"model.attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    if impl in ("blocked", "einsum", "jax"):
        return impl
    if device_kind is None:
        device_kind = _device_kind()
    if impl == "cudnn" or (impl == "auto" and platform == "gpu"):
        reason = cudnn_unsupported_reason(
            q_shape,
            k_shape,
            dtype,
            windowed=windowed,
            right_padded=right_padded,
            platform=platform,
            device_kind=device_kind,
        )
        return _fused_or_fallback(impl, "cudnn", reason, q_shape, dtype)
    if impl == "splash" or (impl == "auto" and platform == "tpu"):
        return _fused_or_fallback(
            impl, "splash", splash_reason(q_shape, k_shape, dtype, windowed=windowed), q_shape, dtype
        )
    if platform != "cpu":  # no fused kernel of ours on this platform
        return "einsum"
    # auto on the CPU: skip the masked blocks once there are blocks to skip.
    return "blocked" if q_shape[1] >= 2 * CPU_BLOCK else "einsum"


def _fused_or_fallback(impl: str, fused: str, reason: str | None, q_shape, dtype) -> str:
    if reason is None:
        _log_once(f"attention: {fused} for q {tuple(q_shape)} {jnp.dtype(dtype).name}")
        return fused
    if impl == fused:
        raise ValueError(
            f"model.attention_impl={fused} cannot run attention of shape {tuple(q_shape)} {jnp.dtype(dtype).name}: "
            f"{reason} (model.attention_impl=auto falls back to the einsum)"
        )
    _log_once(f"attention: einsum instead of {fused} for q {tuple(q_shape)} {jnp.dtype(dtype).name}: {reason}")
    return "einsum"


def _device_kind() -> str:
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.abstract_device is not None:
        return mesh.abstract_device.device_kind or ""
    return jax.devices()[0].device_kind


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        logger.info(message)
