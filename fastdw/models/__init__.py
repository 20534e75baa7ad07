"""Reference architectures built on fastdw: MobileNetV2 and Xception, plus an end-to-end
benchmark (``run_e2e``) of a converted MobileNetV2 against the stock one."""
from .e2e import format_rows, run_e2e
from .mobilenetv2 import MobileNetV2, mobilenet_v2
from .xception import Xception, xception

__all__ = ["MobileNetV2", "mobilenet_v2", "Xception", "xception", "run_e2e", "format_rows"]
