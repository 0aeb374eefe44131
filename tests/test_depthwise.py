"""hwnas.spaces.depthwise against F.conv2d (the independent reference), in float64: values and both gradients."""
import pytest
import torch
import torch.nn.functional as F

from hwnas.spaces.depthwise import _useful_taps, depthwise, run_body
from hwnas.spaces.ops import OPS, PRIMITIVES

# every depthwise geometry of the DARTS ops (k, dilation, padding) at both strides, on maps from 1×1 to 9×9,
# square and not, the sizes where taps fall on padding only (2×2, 4×4 on 8×8 digits) among them
GEOMETRIES = [(3, 1, 1), (5, 1, 2), (3, 2, 2), (5, 2, 4)]


@pytest.mark.parametrize("k, d, p", GEOMETRIES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("h, w", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (7, 7), (8, 8), (9, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_is_f_conv2d(k, d, p, stride, h, w, channels_last):
    g = torch.Generator().manual_seed(k * 100 + d * 10 + p + h * 7 + w)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 4, h, w, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    weight = torch.randn(4, 1, k, k, generator=g, dtype=torch.float64)
    xa, wa = x.clone().requires_grad_(), weight.clone().requires_grad_()
    xb, wb = x.clone().requires_grad_(), weight.clone().requires_grad_()
    ref = F.conv2d(xa, wa, None, stride, p, d, groups=4)
    out = depthwise(xb, wb, (stride, stride), (p, p), (d, d))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(up)
    out.backward(up)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wb.grad, wa.grad, rtol=1e-12, atol=1e-12)


def test_the_taps_on_padding_only_are_the_ones_cut():
    # 5×5, dilation 2 on 2×2: only the centre tap ever reads the input (offsets −4, −2, 0, 2, 4; reach ±1)
    assert _useful_taps(2, 2, 5, 1, 2, 4) == 2
    # 5×5 dense on 2×2: the outer ring reads padding only (offsets ±2 > 1) → 3×3 with padding 1
    assert _useful_taps(2, 2, 5, 1, 1, 2) == 1
    # on 4×4 the 5×5 dense kernel reaches the input from some output with every tap: nothing cut
    assert _useful_taps(4, 4, 5, 1, 1, 2) == 0
    # 5×5 dilation 2 on 4×4: the outer taps (offsets ±4) are out for every output (reach ±3)
    assert _useful_taps(4, 4, 5, 1, 2, 4) == 1
    # both ends must agree, or the output size would change: stride 2 on 3×3 with a 3×3 kernel reads the left
    # padding from output 0 only, and tap 0 of output 1 reads pixel 1
    assert _useful_taps(3, 2, 3, 2, 1, 1) == 0


@pytest.mark.parametrize("name", [n for n in PRIMITIVES if OPS[n].kind == "conv"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [2, 4, 8])
def test_run_body_is_the_ops_own_forward(name, stride, size):
    torch.manual_seed(size + stride)
    op = OPS[name].factory(6, stride, False).double().train()
    x = torch.randn(5, 6, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    ref = op(x)
    out = run_body(op.body, F.relu(x))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_a_training_network_is_the_network_of_plain_convs(monkeypatch):
    """DiscreteNetwork in training mode (depthwise convs through `depthwise`) against the same network whose conv ops
    run their own nn.Conv2d layers, on 8×8 input (2×2 maps in the last cells): outputs and gradients."""
    from hwnas.spaces import network
    from hwnas.spaces.genotype import Genotype

    g = Genotype.parse("Genotype(normal=[('sep_conv_5x5', 0), ('dil_conv_5x5', 1), ('dil_conv_3x3', 0), "
                       "('sep_conv_3x3', 2), ('sep_conv_5x5', 1), ('skip_connect', 0), ('dil_conv_5x5', 3), "
                       "('max_pool_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('dil_conv_5x5', 0), "
                       "('sep_conv_5x5', 1), ('dil_conv_3x3', 2), ('avg_pool_3x3', 0), ('sep_conv_5x5', 2), "
                       "('dil_conv_5x5', 1), ('skip_connect', 3), ('sep_conv_3x3', 4)], reduce_concat=[2, 3, 4, 5])")
    torch.manual_seed(0)
    net = network.DiscreteNetwork(g, network.NetworkConfig(channels=4, layers=5, in_channels=1)).double().train()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)

    def grads(out):
        net.zero_grad()
        out.sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    torch.manual_seed(1)
    fast = net(x)
    fast = fast[0] if isinstance(fast, tuple) else fast
    g_fast = grads(fast)
    from hwnas.spaces import depthwise

    monkeypatch.setattr(depthwise, "run_body", lambda body, h: body(h))
    torch.manual_seed(1)
    plain = net(x)
    plain = plain[0] if isinstance(plain, tuple) else plain
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_fast, grads(plain)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
