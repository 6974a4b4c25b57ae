"""PyTorch parity of self-attention: fmtrain's fm_attention against
torch.nn.MultiheadAttention(C, heads, batch_first=True) called as attn(x, x, x)
with the same weights (its state dict loaded from the dump as is), on outputs,
dx and all four parameter gradients (max relative error <= 1e-4)."""
import torch

from fmparity import Report, run_dump, t

PREFIX = "attn."
PARAMS = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]

# (B, H, W, C, heads): T = H*W tokens of an NHWC map
CASES = [(1, 4, 4, 32, 1), (3, 4, 4, 32, 2), (3, 4, 4, 64, 4), (1, 8, 8, 64, 4), (3, 8, 8, 32, 2),
         (2, 3, 3, 24, 3), (4, 4, 4, 128, 4)]


def check(rep, name, b, h, w, c, heads):
    d, _ = run_dump("nn/parity_attention", b, h, w, c, heads)
    mha = torch.nn.MultiheadAttention(c, heads, batch_first=True)
    # state dict names map 1:1 (strict load fails on any missing or extra key)
    mha.load_state_dict({k[len(PREFIX):]: t(v) for k, v in d.items()
                         if k.startswith(PREFIX) and not k.endswith(".grad")})
    x = t(d["x"].reshape(b, h * w, c), grad=True)
    y, _ = mha(x, x, x, need_weights=False)
    y.backward(t(d["dy"].reshape(b, h * w, c)))
    grads = dict(mha.named_parameters())
    pairs = [("y", d["y"], y.detach().reshape(b, h, w, c).numpy()),
             ("dx", d["dx"], x.grad.reshape(b, h, w, c).numpy())]
    pairs += [(p + ".grad", d[PREFIX + p + ".grad"], grads[p].grad.numpy()) for p in PARAMS]
    rep.case(name, pairs)


def main():
    rep = Report()
    for c in CASES:
        name = "attention_b{}_{}x{}_c{}_h{}".format(*c)
        rep.run(name, lambda c=c, name=name: check(rep, name, *c))
    rep.exit()


if __name__ == "__main__":
    main()
