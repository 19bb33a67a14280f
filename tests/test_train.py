"""Training helpers: BatchNorm recalibration."""

import numpy as np
import torch

from fishermask.models import build_model
from fishermask.train import recalibrate_batchnorm


class _Rows:
    def __init__(self, x):
        self.x = x

    def inputs(self, idx):
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
