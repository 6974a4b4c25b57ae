"""PyTorch parity of the linear layer: fmtrain's fm_linear against
torch.nn.Linear with the same weights, on outputs, dx and every parameter
gradient (max relative error <= 1e-4)."""
import torch

from fmparity import Report, run_dump, t

# (rows M, in, out, bias): odd row counts, a single row, no bias, widths that
# end in a partial 64-column block of the bias-gradient loop
CASES = [(7, 5, 3, 1), (33, 32, 64, 1), (48, 64, 17, 0), (1, 16, 16, 1), (129, 64, 130, 1), (256, 128, 384, 1)]


def check(rep, m, n_in, n_out, bias):
    d, _ = run_dump("nn/parity_linear", m, n_in, n_out, bias)
    lin = torch.nn.Linear(n_in, n_out, bias=bool(bias))
    state = {"weight": t(d["fc.weight"])}
    if bias:
        state["bias"] = t(d["fc.bias"])
    lin.load_state_dict(state)
    x = t(d["x"], grad=True)
    y = lin(x)
    y.backward(t(d["dy"]))
    pairs = [("y", d["y"], y.detach().numpy()), ("dx", d["dx"], x.grad.numpy()),
             ("weight.grad", d["fc.weight.grad"], lin.weight.grad.numpy())]
    if bias:
        pairs.append(("bias.grad", d["fc.bias.grad"], lin.bias.grad.numpy()))
    rep.case(f"linear_m{m}_in{n_in}_out{n_out}_bias{bias}", pairs)


def main():
    rep = Report()
    for c in CASES:
        rep.run(f"linear_m{c[0]}_in{c[1]}_out{c[2]}_bias{c[3]}", lambda c=c: check(rep, *c))
    rep.exit()


if __name__ == "__main__":
    main()
