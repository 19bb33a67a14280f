"""Training helpers: BatchNorm recalibration, on its own and as ``train.bn_recalibrate``."""

import numpy as np
import torch

from fishermask.config import TrainConfig
from fishermask.models import build_model
from fishermask.training import recalibrate_batchnorm, train_model


class _Rows:
    def __init__(self, x, y=None):
        self.x, self.targets = x, y

    def inputs(self, idx, augment=False, generator=None):
        return self.x[torch.as_tensor(idx)]


def test_recalibrated_batchnorm_holds_the_average_batch_statistics():
    torch.manual_seed(0)
    model = build_model("cnn_small", 3, 1)
    x = torch.randn(40, 1, 8, 8) * 3 + 1
    bn = model.body[1]
    bn.running_mean.fill_(123.0)  # stale statistics from "training"
    rows = np.arange(5, 37)  # 32 rows in batches of 8, 8, 8, 8
    recalibrate_batchnorm(model, _Rows(x), rows, batch_size=8)
    with torch.no_grad():
        h = model.body[0](x[torch.as_tensor(rows)])  # the first BatchNorm's input
    batch_means = h.view(4, 8, *h.shape[1:]).mean(dim=(1, 3, 4))  # [batches, channels]
    torch.testing.assert_close(bn.running_mean, batch_means.mean(0), rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 4
    model.eval()  # eval-mode outputs now use those statistics: finite and not the stale ones
    assert torch.isfinite(model(x)).all()


def test_bn_recalibrate_option_ends_training_with_recalibrated_statistics():
    torch.manual_seed(0)
    x, y = torch.randn(48, 1, 8, 8), torch.randint(0, 3, (48,))
    rows = np.arange(0, 40)
    runs = {}
    for flag in (False, True):
        torch.manual_seed(1)
        model = build_model("cnn_small", 3, 1)
        cfg = TrainConfig(epochs=2, batch_size=16, bn_recalibrate=flag)
        train_model(model, _Rows(x, y), rows, cfg, augment=False, device=torch.device("cpu"),
                    generator=torch.Generator().manual_seed(2))
        runs[flag] = model
    # same weights (recalibration takes no gradient step), different BatchNorm statistics ...
    torch.testing.assert_close(runs[True].body[0].weight, runs[False].body[0].weight)
    assert not torch.allclose(runs[True].body[1].running_var, runs[False].body[1].running_var)
    # ... which are exactly what recalibrate_batchnorm computes from the trained model
    recalibrate_batchnorm(runs[False], _Rows(x, y), rows, batch_size=512)
    torch.testing.assert_close(runs[True].body[1].running_mean, runs[False].body[1].running_mean)
    torch.testing.assert_close(runs[True].body[1].running_var, runs[False].body[1].running_var)
