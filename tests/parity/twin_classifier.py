"""The PyTorch twin of fmtrain's eval classifier (src/models/classifier.c), NCHW.

An nn.Sequential `features` (conv3x3 + GroupNorm + SiLU four times, the last
three with stride 2, then global average pooling and flatten) and a Linear
`head`; its state_dict is exactly fmtrain's parameter table.
"""
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    def __init__(self, in_ch=1, width=32, num_classes=10, groups=8):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 4 * width]
        layers, cin = [], in_ch
        for k, c in enumerate(chans):
            layers += [nn.Conv2d(cin, c, 3, stride=1 if k == 0 else 2, padding=1),
                       nn.GroupNorm(min(groups, c), c, eps=1e-5), nn.SiLU()]
            cin = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        """Returns (logits, features); features are the Frechet features."""
        f = self.features(x)
        return self.head(f), f

    def loss(self, x, labels):
        logits, f = self(x)
        return F.cross_entropy(logits, labels), logits, f
