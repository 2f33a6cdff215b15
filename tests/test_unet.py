"""The half U-Net: shapes, input checks, parameter count, and the soft Dice loss."""

from __future__ import annotations

import math

import pytest
import torch

from dpmra.segmentation.unet import UNet, dice_loss, segmentation_loss


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size", [16, 32, 96])
@pytest.mark.parametrize("width", [2, 4])
def test_output_is_a_probability_map_of_the_input_size(size: int, width: int) -> None:
    torch.manual_seed(0)
    model = UNet(base_width=width, dropout=0.1).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, size, size))
    assert out.shape == (3, 1, size, size)
    assert out.min() >= 0 and out.max() <= 1


def test_rectangular_inputs_divisible_by_16_work() -> None:
    out = UNet(base_width=2)(torch.randn(1, 1, 16, 48))
    assert out.shape == (1, 1, 16, 48)


@pytest.mark.parametrize("shape", [(1, 1, 20, 20), (1, 1, 16, 20), (1, 2, 16, 16), (1, 16, 16)])
def test_bad_input_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="UNet"):
        UNet(base_width=2)(torch.randn(*shape))


def test_p20_message_names_the_multiple() -> None:
    with pytest.raises(ValueError, match="not divisible by 16"):
        UNet(base_width=2)(torch.randn(1, 1, 20, 20))


@pytest.mark.parametrize("kwargs", [{"base_width": 0}, {"dropout": 1.0}, {"dropout": -0.1}])
def test_bad_constructor_args_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        UNet(**kwargs)


def hand_count(w: int) -> int:
    """Parameters of the half U-Net by hand: nine two-conv blocks plus the 1x1 head."""

    def block(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out

    down = block(1, w) + block(w, 2 * w) + block(2 * w, 4 * w) + block(4 * w, 8 * w)
    bottom = block(8 * w, 16 * w)
    up = block(24 * w, 8 * w) + block(12 * w, 4 * w) + block(6 * w, 2 * w) + block(3 * w, w)
    return down + bottom + up + w + 1


@pytest.mark.parametrize("width", [4, 32])
def test_parameter_count_matches_the_hand_count(width: int) -> None:
    model = UNet(base_width=width)
    assert sum(p.numel() for p in model.parameters()) == hand_count(width)


def test_paper_widths_give_7_8_million_parameters() -> None:
    assert hand_count(32) == 7_846_081
    widths = [m.out_channels for m in UNet(base_width=32).modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[:10:2] == [32, 64, 128, 256, 512]


def test_dropout_sits_between_the_two_convs_of_every_block() -> None:
    model = UNet(base_width=2, dropout=0.3)
    blocks = [*model.down, model.bottom, *model.up]
    assert len(blocks) == 9
    for block in blocks:
        kinds = [type(layer).__name__ for layer in block]
        assert kinds == ["Conv2d", "ReLU", "Dropout", "Conv2d", "ReLU"]
        assert block[2].p == 0.3


def test_config_rebuilds_the_model() -> None:
    model = UNet(base_width=3, dropout=0.2)
    assert UNet(**model.config()).config() == {"base_width": 3, "dropout": 0.2}


def test_dice_loss_perfect_prediction_is_zero() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[:, :, 1:3, 1:3] = 1
    assert dice_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-7)


def test_dice_loss_disjoint_prediction_is_nearly_one() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :4, :] = 1
    prob = 1 - target
    # 1 - (0 + 1) / (32 + 32 + 1)
    assert dice_loss(prob, target).item() == pytest.approx(1 - 1 / 65)


def test_dice_loss_hand_computed_soft_case_is_over_the_whole_batch() -> None:
    prob = torch.tensor([0.5, 0.5, 0.0, 1.0]).view(2, 1, 1, 2)
    target = torch.tensor([1, 0, 0, 1], dtype=torch.uint8).view(2, 1, 1, 2)
    # intersection 1.5, sums 2 and 2: 1 - (3 + 1) / (4 + 1)
    assert dice_loss(prob, target).item() == pytest.approx(0.2)
    assert dice_loss(prob, target, eps=0.0).item() == pytest.approx(0.25)


def test_dice_loss_of_empty_target_and_prediction_is_zero() -> None:
    zeros = torch.zeros(1, 1, 4, 4)
    assert dice_loss(zeros, zeros).item() == pytest.approx(0.0)


def test_forward_is_the_sigmoid_of_the_logits() -> None:
    model = UNet(base_width=4).eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x), torch.sigmoid(model.logits(x)))


def test_dice_bce_is_hand_computed_dice_plus_mean_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]]).view(1, 1, 2, 2)
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    prob = [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(1)), 1 / (1 + math.exp(-3))]
    truth = [0.0, 1.0, 1.0, 0.0]
    dice = 1 - (2 * (prob[1] + prob[2]) + 1) / (sum(prob) + 2 + 1)
    bce = -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for p, t in zip(prob, truth)) / 4
    assert segmentation_loss(logits, target, "dice").item() == pytest.approx(dice, rel=1e-6)
    assert segmentation_loss(logits, target, "dice_bce").item() == pytest.approx(dice + bce, rel=1e-6)


def test_dice_bce_matches_monai_dice_ce_loss() -> None:
    monai_losses = pytest.importorskip("monai.losses")
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 16, 16, generator=generator) * 3
    target = (torch.rand(4, 1, 16, 16, generator=generator) < 0.2).float()
    reference = monai_losses.DiceCELoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    torch.testing.assert_close(segmentation_loss(logits, target, "dice_bce"), reference(logits, target))


def test_cross_entropy_keeps_a_gradient_where_saturated_dice_has_none() -> None:
    logits = torch.full((1, 1, 4, 4), -30.0, requires_grad=True)
    target = torch.zeros(1, 1, 4, 4)
    target[..., 0, 0] = 1
    segmentation_loss(logits, target, "dice").backward()
    dice_grad = logits.grad[..., 0, 0].abs().item()
    logits.grad = None
    segmentation_loss(logits, target, "dice_bce").backward()
    assert dice_grad < 1e-9
    assert logits.grad[..., 0, 0].item() == pytest.approx(-1 / 16, rel=1e-6)


def test_unknown_loss_raises() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        segmentation_loss(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), "focal")


def test_channels_last_layout_gives_the_plain_nchw_result() -> None:
    model = UNet(base_width=4).eval()
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in model.parameters() if w.dim() == 4)
    plain = UNet(base_width=4, memory_format=torch.contiguous_format).eval()
    plain.load_state_dict(model.state_dict())
    assert all(w.is_contiguous() for w in plain.parameters())
    x = torch.randn(3, 1, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = plain(x)
        assert reference.is_contiguous()
        torch.testing.assert_close(model(x), reference, rtol=1e-5, atol=1e-6)
