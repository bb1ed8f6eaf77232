"""``slow_tiny_test``: the ``tiny_test`` detector sleeping in each training step, so a test can
kill its worker mid-run. Kept in tests/ only."""

from __future__ import annotations

import time

from tiny_detector import TinyDetector

from models.registry import register_model


class SlowTinyDetector(TinyDetector):
    def __init__(self, input_size: int = 64, width: float = 1.0, sleep: float = 0.3):
        super().__init__(input_size, width)
        self.sleep = sleep

    def forward(self, images, targets=None):
        if self.training:
            time.sleep(self.sleep)
        return super().forward(images, targets)


@register_model("slow_tiny_test", description="test-only tiny_test that sleeps per step")
def build_slow(input_size: int = 64, width: float = 1.0, sleep: float = 0.3) -> SlowTinyDetector:
    """Test-only ``tiny_test`` sleeping ``sleep`` seconds per training step."""
    return SlowTinyDetector(input_size, width, sleep)
