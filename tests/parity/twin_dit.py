"""PyTorch twin of fmtrain's DiT velocity model (include/fm/dit.h).

A readable nn.Module whose state_dict keys, shapes and order equal the C
model's parameter names, so an fmtrain checkpoint loads with
load_state_dict(strict=True). Input and output are NCHW here, as PyTorch
models take them (fmtrain keeps NHWC; the patch features are ordered
(dy, dx, channel) in both).

    h  = x_embed(patchify(x)) + pos                 pos: fixed 2-D sin-cos table
    c  = t_embed(sinusoidal(t)) + y_embed(y)        y = num_classes is the null label
    h  = block(h, SiLU(c))  for each block          adaLN-zero
    out = unpatchify(final.linear(modulate(LN(h), final.adaLN(SiLU(c)))))
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TIME_SCALE = 1000.0
LN_EPS = 1e-6


def timestep_embedding(t, dim, scale=TIME_SCALE):
    """[B] -> [B, dim]: [cos(t s f_i), sin(t s f_i)] (cos first), f_i = 10000^(-i/half),
    computed in float64 and rounded once, as fm_time_embed."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * scale * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()


def pos_embed_2d(width, side):
    """[side*side, width] fixed table: token (i, j) (row i, column j) gets
    [sin(j w), cos(j w), sin(i w), cos(i w)], w_k = 10000^(-k/q), q = width/4
    (DiT / MAE's get_2d_sincos_pos_embed), in float64 rounded to float32."""
    q = width // 4
    omega = np.exp(-math.log(10000.0) * np.arange(q, dtype=np.float64) / q)
    i, j = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64), indexing="ij")
    ai = i.reshape(-1, 1) * omega[None]
    aj = j.reshape(-1, 1) * omega[None]
    table = np.concatenate([np.sin(aj), np.cos(aj), np.sin(ai), np.cos(ai)], axis=1)
    return torch.from_numpy(table.astype(np.float32))


def modulate(x, shift, scale):
    """x [B, T, D] * (1 + scale[:, None]) + shift[:, None]."""
    return x * (1 + scale[:, None]) + shift[:, None]


def patchify(x, p):
    """NCHW [B, C, H, W] -> tokens [B, (H/p)(W/p), p*p*C], features (dy, dx, c)."""
    b, c, h, w = x.shape
    x = x.permute(0, 2, 3, 1).reshape(b, h // p, p, w // p, p, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tok, p, c, h, w):
    """The inverse of patchify: tokens -> NCHW [B, C, H, W]."""
    b = tok.shape[0]
    x = tok.reshape(b, h // p, w // p, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    return x.permute(0, 3, 1, 2)


class DiTBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.adaLN = nn.Linear(width, 6 * width)
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x, sc):
        """x [B, T, D], sc = SiLU(c) [B, D]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(sc).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h, h, h, need_weights=False)[0]
        x = x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    def __init__(self, width, out_dim):
        super().__init__()
        self.adaLN = nn.Linear(width, 2 * width)
        self.norm = nn.LayerNorm(width, eps=LN_EPS, elementwise_affine=False)
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x, sc):
        shift, scale = self.adaLN(sc).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, in_ch=4, size=8, patch=1, width=64, depth=2, heads=4, mlp_ratio=4.0, num_classes=10,
                 t_freq=256):
        super().__init__()
        self.in_ch, self.size, self.patch, self.t_freq = in_ch, size, patch, t_freq
        pdim = patch * patch * in_ch
        self.x_embed = nn.Linear(pdim, width)
        self.t_embed = nn.Sequential(nn.Linear(t_freq, width), nn.SiLU(), nn.Linear(width, width))
        self.y_embed = nn.Embedding(num_classes + 1, width)
        self.blocks = nn.ModuleList([DiTBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.final = FinalLayer(width, pdim)
        self.register_buffer("pos", pos_embed_2d(width, size // patch), persistent=False)
        self.zero_init()

    def zero_init(self):
        """adaLN-zero: every adaLN linear and final.linear start at zero."""
        for lin in [b.adaLN for b in self.blocks] + [self.final.adaLN, self.final.linear]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x, t, y):
        """x [B, C, H, W], t [B] in [0, 1], y [B] int64 -> velocity [B, C, H, W]."""
        h = self.x_embed(patchify(x, self.patch)) + self.pos
        c = self.t_embed(timestep_embedding(t, self.t_freq)) + self.y_embed(y)
        sc = F.silu(c)
        for block in self.blocks:
            h = block(h, sc)
        return unpatchify(self.final(h, sc), self.patch, self.in_ch, self.size, self.size)
