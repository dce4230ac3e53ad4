"""darknet_py.train.optim.DarknetSGD against a direct transcription of Darknet's update code.

The reference below follows ``update_convolutional_layer`` (CPU) / ``adam_update_gpu`` line by
line on float32 numpy arrays: backward adds this iteration's updates (``-grad``) to the carried
``*_updates`` buffers, then axpy/scal exactly as the C code orders them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from darknet_py.train.optim import DarknetSGD, darknet_param_groups

f32 = np.float32


def _reference_sgd(w, b, s, grads, rates, momentum, decay, batch, lr_scale=1.0):
    """update_convolutional_layer, iteration by iteration (weights w, biases b, BN scales s)."""
    w, b, s = w.copy(), b.copy(), s.copy()
    wu, bu, su = np.zeros_like(w), np.zeros_like(b), np.zeros_like(s)
    for (gw, gb, gs), rate in zip(grads, rates):
        # backward_convolutional_layer: l.*_updates += this batch's -dL/dparam
        wu += -gw
        bu += -gb
        su += -gs
        lr = f32(rate * lr_scale)
        wu += f32(-decay * batch) * w          # axpy(-decay*batch, weights, weight_updates)
        w += f32(lr / batch) * wu              # axpy(lr/batch, weight_updates, weights)
        wu *= f32(momentum)                    # scal(momentum, weight_updates)
        b += f32(lr / batch) * bu
        bu *= f32(momentum)
        s += f32(lr / batch) * su
        su *= f32(momentum)
    return w, b, s


def _reference_adam(w, b, grads, rates, decay, batch, B1, B2, eps, t0):
    """adam_update_gpu for weights and biases (decay on both, updates cleared after)."""
    w, b = w.copy(), b.copy()
    mw, vw, mb, vb = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    for k, ((gw, gb), rate) in enumerate(zip(grads, rates)):
        t = t0 + k
        for x, g, m, v in ((w, gw, mw, vw), (b, gb, mb, vb)):
            d = -g
            m *= f32(B1)
            v *= f32(B2)
            d = d + f32(-decay * batch) * x
            m += f32(1 - B1) * d
            v += f32(1 - B2) * d * d
            mhat = m / f32(1 - B1 ** t)
            vhat = v / f32(1 - B2 ** t)
            x += f32(rate) * mhat / (np.sqrt(vhat) + f32(eps))
    return w, b


def _params(rng):
    w = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)))
    b = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(4).astype(np.float32)))
    s = torch.nn.Parameter(torch.from_numpy(rng.uniform(0.5, 2, 4).astype(np.float32)))
    return w, b, s


def _grads(rng, n):
    return [(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 10,
             rng.standard_normal(4).astype(np.float32) * 10,
             rng.standard_normal(4).astype(np.float32) * 10) for _ in range(n)]


@pytest.mark.parametrize("lr_scale", [1.0, 0.5])
def test_sgd_matches_darknet_update_over_steps(lr_scale):
    rng = np.random.default_rng(0)
    w, b, s = _params(rng)
    w0, b0, s0 = (p.detach().numpy().copy() for p in (w, b, s))
    grads = _grads(rng, 6)
    rates = [0.001, 0.002, 0.00261, 0.00261, 0.000261, 0.01]
    momentum, decay, batch = 0.949, 0.0005, 64
    opt = DarknetSGD([dict(params=[w], decay=True, lr_scale=lr_scale),
                      dict(params=[b, s], decay=False, lr_scale=lr_scale)],
                     momentum=momentum, decay=decay, batch=batch)
    for (gw, gb, gs), rate in zip(grads, rates):
        for p, g in ((w, gw), (b, gb), (s, gs)):
            p.grad = torch.from_numpy(g.copy())
        opt.step(lr=rate)
    rw, rb, rs = _reference_sgd(w0, b0, s0, grads, rates, momentum, decay, batch, lr_scale)
    np.testing.assert_allclose(w.detach().numpy(), rw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.detach().numpy(), rb, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s.detach().numpy(), rs, rtol=1e-6, atol=1e-7)
    # the buffers Darknet carries into the next iteration
    assert torch.is_tensor(opt.state[w]["updates"])
    # decay really applied to weights only: with zero gradients biases stay, weights shrink
    for p in (w, b, s):
        p.grad = torch.zeros_like(p)
        opt.state[p]["updates"].zero_()
    before = [p.detach().clone() for p in (w, b, s)]
    opt.step(lr=0.01)
    assert torch.equal(b.detach(), before[1]) and torch.equal(s.detach(), before[2])
    torch.testing.assert_close(w.detach(), before[0] * (1 - 0.01 * lr_scale * decay))


def test_adam_matches_darknet_adam_update_gpu():
    rng = np.random.default_rng(1)
    w, b, _ = _params(rng)
    w0, b0 = w.detach().numpy().copy(), b.detach().numpy().copy()
    grads = [(g[0], g[1]) for g in _grads(rng, 4)]
    rates = [0.001, 0.001, 0.0005, 0.0005]
    decay, batch = 0.0005, 16
    opt = DarknetSGD([dict(params=[w], decay=True), dict(params=[b], decay=False)],
                     decay=decay, batch=batch, adam=True, B1=0.9, B2=0.999, eps=0.000001)
    for k, ((gw, gb), rate) in enumerate(zip(grads, rates)):
        w.grad, b.grad = torch.from_numpy(gw.copy()), torch.from_numpy(gb.copy())
        opt.step(lr=rate, iteration=5 + k)
    rw, rb = _reference_adam(w0, b0, grads, rates, decay, batch, 0.9, 0.999, 0.000001, t0=5)
    np.testing.assert_allclose(w.detach().numpy(), rw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.detach().numpy(), rb, rtol=1e-5, atol=1e-6)


def test_gpu_nan_repair_and_clip():
    w = torch.nn.Parameter(torch.tensor([[1.0, float("nan")], [0.5, -3.0]]))
    b = torch.nn.Parameter(torch.tensor([float("nan"), 1.0]))
    opt = DarknetSGD([dict(params=[w], decay=True, clip=2.0), dict(params=[b], decay=False)],
                     momentum=0.0, decay=0.0, batch=1)
    w.grad = torch.tensor([[float("inf"), 0.0], [0.0, 0.0]])
    b.grad = torch.zeros(2)
    opt.step(lr=1.0)
    # NaN weight -> 1/(index+1) = 1/2; inf gradient entry ignored; clip to [-2, 2]
    torch.testing.assert_close(w.detach(), torch.tensor([[1.0, 0.5], [0.5, -2.0]]))
    assert torch.isnan(b.detach()[0])  # biases are not repaired (weights only, as Darknet)


def test_layer_flags_skip_updates():
    p = torch.nn.Parameter(torch.ones(2, 2))
    opt = DarknetSGD([dict(params=[p], decay=False, dont_update=10)], momentum=0.0, batch=1)
    p.grad = -torch.ones(2, 2)
    opt.step(lr=1.0, iteration=10)  # Darknet updates only when dont_update < iteration
    assert torch.equal(p.detach(), torch.ones(2, 2))
    opt.step(lr=1.0, iteration=11)
    assert torch.equal(p.detach(), torch.full((2, 2), 2.0))
    q = torch.nn.Parameter(torch.ones(2))
    opt = DarknetSGD([dict(params=[q], decay=False, burnin_update=2)], momentum=0.0, batch=1)
    q.grad = -torch.ones(2)
    opt.step(lr=1.0, iteration=1500, burn_in=1000)  # 2 * 1000 > 1500: frozen
    assert torch.equal(q.detach(), torch.ones(2))


def test_param_groups_of_a_network(tmp_path):
    from darknet_py.model.network import Network
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nbatch=8\nsubdivisions=2\nwidth=32\nheight=32\nchannels=3\n"
                   "momentum=0.9\ndecay=0.0005\nlearning_rate=0.01\n\n"
                   "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\n"
                   "activation=leaky\nlearning_rate=0.1\n\n"
                   "[convolutional]\nfilters=6\nsize=1\nstride=1\npad=1\nactivation=linear\n")
    net = Network.from_cfg(cfg)
    groups = darknet_param_groups(net)
    by = {(g["layer"], g["decay"]): g for g in groups}
    assert {k: len(g["params"]) for k, g in by.items()} == {
        (0, True): 1, (0, False): 2, (1, True): 1, (1, False): 1}
    assert by[(0, True)]["lr_scale"] == pytest.approx(0.1)
    assert by[(1, False)]["lr_scale"] == 1.0
    opt = DarknetSGD.from_config(groups, net.config)
    assert opt.defaults["batch"] == 8 and opt.defaults["momentum"] == pytest.approx(0.9)
    assert opt.defaults["weight_decay"] == pytest.approx(0.0005)


def test_network_constructor_schedule_and_grad_scaler(tmp_path):
    """``DarknetSGD(net, cfg)``: Darknet's groups, its schedule, and AMP loss scaling undone."""
    from darknet_py.model.network import Network
    from darknet_py.train.schedule import learning_rate
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nbatch=4\nsubdivisions=1\nwidth=16\nheight=16\nchannels=3\n"
                   "momentum=0.9\ndecay=0.0005\nlearning_rate=0.01\nburn_in=10\npolicy=constant\n\n"
                   "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\n"
                   "activation=leaky\n")
    results = []
    for use_scaler in (False, True):
        torch.manual_seed(0)
        net = Network.from_cfg(cfg)
        net.train()
        opt = DarknetSGD(net, net.config, lr_multiplier=2.0)
        assert opt.rate(5) == pytest.approx(2 * learning_rate(net.config, 5))
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=use_scaler)
        x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        for it in (5, 6):
            opt.zero_grad()
            loss = net(x)[0].sum() if net.heads else net.forward_all(x)[-1].pow(2).sum()
            scaler.scale(loss).backward()
            opt.step(it, scaler=scaler)
        assert opt.last_rate == pytest.approx(2 * 0.01 * (6 / 10) ** 4, rel=1e-6)
        results.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
