"""The PyTorch twin of fmtrain's U-Net (include/fm/unet.h, src/models/unet.c).

A plain nn.Module, NCHW like any torch model. Its state_dict keys, shapes and
order are exactly fmtrain's parameter names, so a checkpoint or a parity dump
loads with load_state_dict(strict=True). It is also the PyTorch baseline for
the benchmarks. Initialisation is torch's default (no zero-init of conv2 and
out_conv): weights are meant to be loaded from fmtrain.

    model = UNet(in_ch=4, size=8, channels=(64, 128), res_blocks=2, attn_res=(4,),
                 heads=4, groups=8, emb_dim=256, num_classes=10)
    v = model(x, t, y)   # x [B, in_ch, H, W], t [B] in [0, 1), y [B] int64 in [0, 10]
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TIME_SCALE = 1000.0  # FM_UNET_T_SCALE
GN_EPS = 1e-5        # FM_UNET_GN_EPS


def sinusoidal(t, dim, scale=TIME_SCALE):
    """[B] -> [B, dim]: cos of t*scale*f_i, then sin, f_i = 10000^(-i/half);
    computed in float64 and rounded once, as fmtrain's embed.c does."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    arg = t.double()[:, None] * scale * freqs[None, :]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1).float()


def norm(groups, c):
    return nn.GroupNorm(min(groups, c), c, eps=GN_EPS)


class ResBlock(nn.Module):
    """h = conv1(silu(norm1(x))); h = norm2(h) * (1 + scale) + shift with
    (scale, shift) = emb_proj(c); out = skip(x) + conv2(silu(h))."""

    def __init__(self, cin, cout, emb_dim, groups):
        super().__init__()
        self.norm1 = norm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = norm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, c):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(c)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """out = x + MultiheadAttention(norm(x)) over the H*W tokens."""

    def __init__(self, c, heads, groups):
        super().__init__()
        self.norm = norm(groups, c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)

    def forward(self, x):
        b, c, h, w = x.shape
        tok = self.norm(x).flatten(2).transpose(1, 2)            # [B, T, C]
        y, _ = self.attn(tok, tok, tok, need_weights=False)
        return x + y.transpose(1, 2).reshape(b, c, h, w)


class Level(nn.Module):
    """One resolution: ResBlocks `res`, attention `attn` after each of them
    (when the side is in attn_res), and an optional `downsample` (stride-2
    3x3 conv) or `upsample` (nearest x2, then 3x3 conv)."""

    def __init__(self, cins, cout, side, emb_dim, heads, groups, attn_res, resample=None):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(ci, cout, emb_dim, groups) for ci in cins)
        self.attn = nn.ModuleList(AttnBlock(cout, heads, groups) for _ in cins) if side in attn_res \
            else nn.ModuleList()
        if resample == "down":
            self.downsample = nn.Conv2d(cout, cout, 3, stride=2, padding=1)
        elif resample == "up":
            self.upsample = nn.Conv2d(cout, cout, 3, padding=1)


class UNet(nn.Module):
    def __init__(self, in_ch, size, channels, res_blocks, attn_res, heads, groups, emb_dim, num_classes):
        super().__init__()
        ch0, nl = channels[0], len(channels)
        self.ch0 = ch0
        self.time_mlp = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim)  # last row: the null label
        self.conv_in = nn.Conv2d(in_ch, ch0, 3, padding=1)

        # down path; skip_ch records the channels of every kept activation
        skip_ch, ch = [ch0], ch0
        self.down = nn.ModuleList()
        for i, c in enumerate(channels):
            cins = [ch] + [c] * (res_blocks - 1)
            self.down.append(Level(cins, c, size >> i, emb_dim, heads, groups, attn_res,
                                   "down" if i < nl - 1 else None))
            skip_ch += [c] * (res_blocks + (i < nl - 1))
            ch = c
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups), AttnBlock(ch, heads, groups),
                                  ResBlock(ch, ch, emb_dim, groups)])

        # up path, built from the lowest level but stored by level index
        up = [None] * nl
        for i in reversed(range(nl)):
            cins = []
            for _ in range(res_blocks + 1):
                cins.append(ch + skip_ch.pop())
                ch = channels[i]
            up[i] = Level(cins, channels[i], size >> i, emb_dim, heads, groups, attn_res,
                          "up" if i > 0 else None)
        self.up = nn.ModuleList(up)
        self.out_norm = norm(groups, ch0)
        self.out_conv = nn.Conv2d(ch0, in_ch, 3, padding=1)

    def forward(self, x, t, y):
        c = F.silu(self.time_mlp(sinusoidal(t, self.ch0)) + self.class_emb(y))   # [B, E]
        h = self.conv_in(x)
        hs = [h]
        for lvl in self.down:
            for j, rb in enumerate(lvl.res):
                h = rb(h, c)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
                hs.append(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
                hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, c)), c)
        for lvl in reversed(self.up):
            for j, rb in enumerate(lvl.res):
                h = rb(torch.cat([h, hs.pop()], dim=1), c)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "upsample"):
                h = self.up_conv(lvl.upsample, h)
        return self.out_conv(F.silu(self.out_norm(h)))

    def up_conv(self, conv, h):
        """Nearest x2, then the level's 3x3 `conv` (tests/bench/twin_upconv.py
        overrides this with fmtrain's 4-parity form, same parameters)."""
        return conv(F.interpolate(h, scale_factor=2, mode="nearest"))
