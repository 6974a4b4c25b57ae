"""The PyTorch twin of fmtrain's VAE (src/models/vae.c), NCHW.

Its state_dict keys, shapes and order are exactly fmtrain's parameter names,
so a checkpoint loads with `load_state_dict` as is. The noise eps is an input
(fmtrain draws it with Philox; the parity dump carries the values used).
"""
import torch
import torch.nn.functional as F
from torch import nn

GN_EPS = 1e-5
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def norm(groups, c):
    return nn.GroupNorm(min(groups, c), c, eps=GN_EPS)


class ResBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus a skip (1x1 conv when
    the channels change)."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = norm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = norm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.skip(x) if self.skip is not None else x)


class Down(nn.Module):
    """An encoder level: ResBlocks, then a stride-2 3x3 conv unless last."""

    def __init__(self, cin, cout, res_blocks, groups, downsample):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin if j == 0 else cout, cout, groups) for j in range(res_blocks))
        self.downsample = nn.Conv2d(cout, cout, 3, stride=2, padding=1) if downsample else None

    def forward(self, x):
        for block in self.res:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class Up(nn.Module):
    """A decoder level: ResBlocks, then nearest x2 + 3x3 conv unless at the top."""

    def __init__(self, cin, cout, res_blocks, groups, upsample):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin if j == 0 else cout, cout, groups) for j in range(res_blocks))
        self.upsample = nn.Conv2d(cout, cout, 3, padding=1) if upsample else None

    def forward(self, x):
        for block in self.res:
            x = block(x)
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2, mode="nearest"))
        return x


class Encoder(nn.Module):
    def __init__(self, in_ch, channels, res_blocks, latent_ch, groups):
        super().__init__()
        L = len(channels)
        self.conv_in = nn.Conv2d(in_ch, channels[0], 3, padding=1)
        self.down = nn.ModuleList(
            Down(channels[max(i - 1, 0)], channels[i], res_blocks, groups, i < L - 1) for i in range(L))
        self.out_norm = norm(groups, channels[-1])
        self.out_conv = nn.Conv2d(channels[-1], 2 * latent_ch, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.out_conv(F.silu(self.out_norm(h)))  # (mu, raw logvar) along channels


class Decoder(nn.Module):
    def __init__(self, in_ch, channels, res_blocks, latent_ch, groups):
        super().__init__()
        L = len(channels)
        self.conv_in = nn.Conv2d(latent_ch, channels[-1], 3, padding=1)
        # indexed by level like the encoder; run from the bottom (L-1) up
        self.up = nn.ModuleList(
            Up(channels[min(i + 1, L - 1)], channels[i], res_blocks, groups, i > 0) for i in range(L))
        self.out_norm = norm(groups, channels[0])
        self.out_conv = nn.Conv2d(channels[0], in_ch, 3, padding=1)

    def forward(self, z):
        h = self.conv_in(z)
        for level in reversed(self.up):
            h = level(h)
        return self.out_conv(F.silu(self.out_norm(h)))


class VAE(nn.Module):
    def __init__(self, in_ch=1, channels=(32, 64, 128), res_blocks=1, latent_ch=4, groups=8,
                 loss="l2", kl_weight=1e-4):
        super().__init__()
        self.latent_ch, self.loss_kind, self.kl_weight = latent_ch, loss, kl_weight
        self.encoder = Encoder(in_ch, channels, res_blocks, latent_ch, groups)
        self.decoder = Decoder(in_ch, channels, res_blocks, latent_ch, groups)

    def forward(self, x, eps):
        """Returns xhat, mu, logvar (clamped), z for images x and noise eps."""
        mu, logvar = self.encoder(x).split(self.latent_ch, dim=1)
        logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder(z), mu, logvar, z

    def loss(self, x, eps):
        """(total, recon, kl, (xhat, mu, logvar, z)); recon is the mean over pixels,
        kl the mean over batch and latent elements."""
        xhat, mu, logvar, z = self(x, eps)
        recon = F.l1_loss(xhat, x) if self.loss_kind == "l1" else F.mse_loss(xhat, x)
        kl = (0.5 * (mu * mu + logvar.exp() - 1.0 - logvar)).mean()
        return recon + self.kl_weight * kl, recon, kl, (xhat, mu, logvar, z)
