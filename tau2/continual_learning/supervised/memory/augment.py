"""Read-time augmentations for independent buffer augmentation (IBA).

Each augmentation maps a batch tensor to a *new* tensor (never in place), so the raw samples in
a buffer stay untouched and every replay sees a fresh variation. ``make_augmentation`` builds
one from a name so configs can say ``augment="shift"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Augmentation = Callable[[torch.Tensor], torch.Tensor]


class GaussianNoise:
    """Adds N(0, std^2) noise, then clamps to ``clamp`` (if given)."""

    def __init__(self, std: float = 0.05, clamp: tuple[float, float] | None = (0.0, 1.0)) -> None:
        if std < 0:
            raise ValueError(f"GaussianNoise std must be >= 0, got {std!r}")
        self.std, self.clamp = std, clamp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.std * torch.randn_like(x)
        return out.clamp(*self.clamp) if self.clamp is not None else out


class AWGN:
    """Additive white Gaussian noise at a signal-to-noise ratio in dB, per sample (for channel
    or waveform data: "SNR corruptions")."""

    def __init__(self, snr_db: float = 20.0) -> None:
        self.snr_db = snr_db

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        power = x.pow(2).mean(dim=dims, keepdim=True) if dims else x.pow(2)
        noise_power = power / (10.0 ** (self.snr_db / 10.0))
        return x + noise_power.sqrt() * torch.randn_like(x)


class RandomShift:
    """Shifts images by up to ``max_shift`` pixels (zero padding). Works on ``(N, C, H, W)``
    batches or flat ``(N, H*W)`` batches when ``image_shape=(H, W)`` is given."""

    def __init__(self, max_shift: int = 1, image_shape: Sequence[int] | None = None) -> None:
        if max_shift < 0:
            raise ValueError(f"RandomShift max_shift must be >= 0, got {max_shift!r}")
        self.max_shift = max_shift
        self.image_shape = tuple(image_shape) if image_shape is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat_shape = x.shape
        if self.image_shape is not None:
            x = x.reshape(x.shape[0], 1, *self.image_shape)
        if x.dim() != 4:
            raise ValueError(
                f"RandomShift needs (N, C, H, W) input or image_shape, got shape {tuple(flat_shape)}"
            )
        s = self.max_shift
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (s, s, s, s))
        dy = torch.randint(0, 2 * s + 1, (n,))
        dx = torch.randint(0, 2 * s + 1, (n,))
        rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)
        cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).reshape(flat_shape)


class Compose:
    """Applies augmentations in order."""

    def __init__(self, *augmentations: Augmentation) -> None:
        self.augmentations = augmentations

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for aug in self.augmentations:
            x = aug(x)
        return x


def make_augmentation(
    spec: str | Augmentation | None,
    strength: float | None = None,
    image_shape: Sequence[int] | None = None,
) -> Augmentation | None:
    """``None``, a callable, or one of ``"shift"``, ``"noise"``, ``"shift+noise"``, ``"awgn"``.

    ``strength`` is the shift in pixels, the noise std or the SNR in dB respectively.
    """
    if spec is None or callable(spec):
        return spec
    builders: dict[str, Callable[[], Augmentation]] = {
        "shift": lambda: RandomShift(int(strength or 1), image_shape),
        "noise": lambda: GaussianNoise(0.05 if strength is None else strength),
        "shift+noise": lambda: Compose(
            RandomShift(1, image_shape), GaussianNoise(strength or 0.05)
        ),
        "awgn": lambda: AWGN(20.0 if strength is None else strength),
    }
    if spec not in builders:
        raise ValueError(
            f"augment {spec!r} is unknown; allowed: None, a callable, {sorted(builders)}"
        )
    return builders[spec]()
