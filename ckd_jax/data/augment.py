"""On-device augmentation: batched, jit/vmap friendly, uint8 in and uint8 out.

The paper's CIFAR augmentation is a random 32x32 crop of the image zero-padded by 4 pixels plus a
random horizontal flip; Stanford Cars (resized to 64 at load time) uses a random 56x56 crop and a
flip. Both are `random_crop_flip` with different arguments. Images stay uint8 until `normalize`,
so the dataset can live on the device at a quarter of the float32 size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_crop_flip(key: jax.Array, images: jax.Array, *, crop_size: int | None = None,
                     padding: int = 4, flip: bool = True) -> jax.Array:
    """Random crop (after zero padding) and random horizontal flip, independently per image.

    Args:
      key: PRNG key.
      images: [B, H, W, C] (any dtype, usually uint8).
      crop_size: output height and width; default H (square images).
      padding: zero padding added on each side before cropping.
      flip: whether to flip each image left-right with probability 1/2.

    Returns:
      [B, crop_size, crop_size, C], same dtype as `images`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    b, h, w, c = images.shape
    crop = h if crop_size is None else crop_size
    if crop > h + 2 * padding or crop > w + 2 * padding:
        raise ValueError(f"crop_size={crop} is larger than the padded image "
                         f"({h + 2 * padding}x{w + 2 * padding})")
    k_y, k_x, k_f = jax.random.split(key, 3)
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ys = jax.random.randint(k_y, (b,), 0, h + 2 * padding - crop + 1)
    xs = jax.random.randint(k_x, (b,), 0, w + 2 * padding - crop + 1)

    def crop_one(img, y, x):
        return jax.lax.dynamic_slice(img, (y, x, 0), (crop, crop, c))

    out = jax.vmap(crop_one)(padded, ys, xs)
    if flip:
        do_flip = jax.random.bernoulli(k_f, 0.5, (b,))
        out = jnp.where(do_flip[:, None, None, None], out[:, :, ::-1, :], out)
    return out


def center_crop(images: jax.Array, crop_size: int) -> jax.Array:
    """Deterministic centre crop [B, H, W, C] -> [B, crop_size, crop_size, C] (evaluation view)."""
    _, h, w, _ = images.shape
    if crop_size > h or crop_size > w:
        raise ValueError(f"crop_size={crop_size} is larger than the image ({h}x{w})")
    y, x = (h - crop_size) // 2, (w - crop_size) // 2
    return images[:, y:y + crop_size, x:x + crop_size, :]


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 [..., C] -> float32 `(x / 255 - mean) / std` with per-channel mean and std."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images.astype(jnp.float32) / 255.0 - mean) / std
