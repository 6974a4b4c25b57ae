"""PyTorch parity of the DiT's LayerNorm and GELU (tests/nn/parity_dit_layers.c):
fm_layernorm against torch.nn.LayerNorm(D, eps, elementwise_affine) (with and
without affine, eps 1e-6 as the DiT uses and 1e-5, torch's default), and
fm_gelu against torch.nn.GELU(approximate="tanh"), on outputs, dx and the
affine parameter gradients (max relative error <= 1e-4)."""
import torch

from fmparity import TOL, Report, rel_err, run_dump, t

DUMPER = "nn/parity_dit_layers"

# (N, T, D, affine, eps exponent)
LN_CASES = [(2, 16, 64, 0, 6), (3, 9, 48, 1, 6), (1, 1, 7, 1, 5), (4, 64, 384, 0, 6), (2, 5, 130, 1, 6)]
GELU_CASES = [(2, 16, 64), (3, 7, 33), (8, 64, 512)]


def layernorm(rep, name, n, tk, d, affine, eps_exp):
    dump, _ = run_dump(DUMPER, "layernorm", n, tk, d, affine, eps_exp)
    ln = torch.nn.LayerNorm(d, eps=10.0 ** -eps_exp, elementwise_affine=bool(affine))
    if affine:
        ln.load_state_dict({"weight": t(dump["norm.weight"]), "bias": t(dump["norm.bias"])})
    x = t(dump["x"], grad=True)
    y = ln(x)
    y.backward(t(dump["dy"]))
    pairs = [("y", dump["y"], y.detach().numpy()), ("dx", dump["dx"], x.grad.numpy())]
    if affine:
        pairs += [("dweight", dump["norm.weight.grad"], ln.weight.grad.numpy()),
                  ("dbias", dump["norm.bias.grad"], ln.bias.grad.numpy())]
    rep.case(name, pairs)


def gelu(rep, name, n, tk, d):
    dump, _ = run_dump(DUMPER, "gelu", n, tk, d)
    x = t(dump["x"], grad=True)
    y = torch.nn.GELU(approximate="tanh")(x)
    y.backward(t(dump["dy"]))
    # the comparison must tell the tanh approximation from the exact (erf) GELU
    xe = t(dump["x"], grad=True)
    ye = torch.nn.GELU()(xe)
    ye.backward(t(dump["dy"]))
    if max(rel_err(dump["y"], ye.detach().numpy()), rel_err(dump["dx"], xe.grad.numpy())) <= TOL:
        raise AssertionError("this case cannot tell GELU(tanh) from the exact GELU")
    rep.case(name, [("y", dump["y"], y.detach().numpy()), ("dx", dump["dx"], x.grad.numpy())])


def main():
    rep = Report()
    for c in LN_CASES:
        name = "layernorm[{},{},{}]{} eps=1e-{}".format(c[0], c[1], c[2], " affine" if c[3] else "", c[4])
        rep.run(name, lambda c=c, name=name: layernorm(rep, name, *c))
    for c in GELU_CASES:
        name = "gelu_tanh[{},{},{}]".format(*c)
        rep.run(name, lambda c=c, name=name: gelu(rep, name, *c))
    rep.exit()


if __name__ == "__main__":
    main()
