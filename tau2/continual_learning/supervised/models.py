"""Models for the supervised side: MLP, LSTM regressor, MLP and conv VAEs, VIB network.

Models with an auxiliary training loss (the VIB's KL and reconstruction terms) implement
``forward_with_aux(x) -> (outputs, per_sample_aux_loss)``; the trainer uses it in training
and the plain ``forward`` for evaluation. Generators implement ``loss(x) -> per-sample loss``
and ``generate(num_samples, device)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(sizes: Sequence[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """Fully connected ReLU network; inputs are flattened."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        self.net = _mlp([input_size, *hidden_sizes, output_size])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class LSTMRegressor(nn.Module):
    """Sequence -> next-value regressor (channel prediction): ``(N, T, F_in) -> (N, F_out)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        output_size: int | None = None,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size or input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mu, exp(logvar)) || N(0, I))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def _reparameterise(mu: torch.Tensor, logvar: torch.Tensor, sample: bool) -> torch.Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu


class _VAEBase(nn.Module):
    """Shared VAE logic; subclasses define ``encode`` and ``decode`` on inputs in [0, 1]."""

    latent_dim: int

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(_reparameterise(mu, logvar, self.training)), mu, logvar

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample negative ELBO: binary cross-entropy reconstruction + KL."""
        recon, mu, logvar = self(x)
        bce = F.binary_cross_entropy(recon, x.clamp(0, 1).reshape(recon.shape), reduction="none")
        return bce.flatten(1).sum(1) + _kl_standard_normal(mu, logvar)

    @torch.no_grad()
    def generate(self, num_samples: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Decoded samples from the prior."""
        device = device or next(self.parameters()).device
        return self.decode(torch.randn(num_samples, self.latent_dim, device=device))


class VAE(_VAEBase):
    """MLP VAE (the PyTorch example layout): flat inputs in [0, 1]."""

    def __init__(
        self, input_size: int, hidden_dims: Sequence[int] = (256, 128), latent_dim: int = 32
    ) -> None:
        super().__init__()
        self.input_size, self.latent_dim = input_size, latent_dim
        self.encoder = _mlp([input_size, *hidden_dims], final_activation=True)
        self.to_stats = nn.Linear(hidden_dims[-1], 2 * latent_dim)
        self.decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(hidden_dims), input_size]), nn.Sigmoid()
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


class ConvVAE(_VAEBase):
    """Convolutional VAE for ``(C, H, W)`` images with H and W divisible by 4. Accepts flat
    inputs too (reshaped to ``image_shape``); generates in the input's layout."""

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        latent_dim: int = 32,
        flat_output: bool = True,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(
                f"ConvVAE image_shape={tuple(image_shape)} needs H and W divisible by 4"
            )
        c1, c2 = channels
        self.image_shape, self.latent_dim, self.flat_output = (c, h, w), latent_dim, flat_output
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 4, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self._inner = (c2, h // 4, w // 4)
        flat = c2 * (h // 4) * (w // 4)
        self.to_stats = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, c, 4, 2, 1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x.reshape(-1, *self.image_shape))).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.from_latent(z).reshape(-1, *self._inner))
        return out.flatten(1) if self.flat_output else out


class VIBNet(nn.Module):
    """Variational information bottleneck classifier.

    encoder -> Gaussian bottleneck ``z`` (``bottleneck_dim`` units) -> classifier, plus a
    reconstruction decoder from ``z``. Training loss = CE + ``beta_1`` * KL(q(z|x) || N(0, I))
    + ``beta_2`` * reconstruction MSE; evaluation uses the posterior mean.
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (256,),
        bottleneck_dim: int = 100,
        beta_1: float = 1e-3,
        beta_2: float = 1e-3,
    ) -> None:
        super().__init__()
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(
                    f"VIBNet {name}={value!r} is invalid; allowed: a finite value >= 0"
                )
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.encoder = nn.Sequential(
            _mlp([input_size, *hidden_sizes], final_activation=True),
            nn.Linear(hidden_sizes[-1], 2 * bottleneck_dim),
        )
        self.classifier = nn.Linear(bottleneck_dim, num_classes)
        self.decoder = _mlp([bottleneck_dim, *reversed(hidden_sizes), input_size])

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-20, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self._stats(x)
        return self.classifier(mu)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits from a sampled ``z`` and the per-sample ``beta_1*KL + beta_2*recon`` loss."""
        mu, logvar = self._stats(x)
        z = _reparameterise(mu, logvar, sample=True)
        recon = F.mse_loss(self.decoder(z), x.flatten(1), reduction="none").sum(1)
        return self.classifier(z), self.beta_1 * _kl_standard_normal(
            mu, logvar
        ) + self.beta_2 * recon


def freeze_submodules(model: nn.Module, names: Iterable[str]) -> None:
    """Stop gradients to the named submodules (e.g. a VIB ``encoder``)."""
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"cannot freeze {name!r}: {type(model).__name__} has no such submodule"
            ) from None
        module.requires_grad_(False)
